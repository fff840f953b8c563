"""A fake OpenAI-compatible upstream: a fixed short answer, as fast as asyncio can send it.

    python bench/fake_upstream.py --port 8400      # POST /v1/chat/completions, stream or not

It stands in for vLLM or llama.cpp in a side-by-side of gateways
(``bench/bench_peer.py``): every gateway under test forwards to it, and the
benchmark also measures it directly, so what each gateway adds is the
difference. It must cost little per request (it shares the machine's cores
with the gateways), so everything it sends is built once at start: a plain
answer is one write; a stream is 20 content chunks, a finish chunk, a usage
chunk when ``stream_options.include_usage`` asks for it, and ``[DONE]``, each
its own write on a later turn of the event loop, as a model server would send
them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Optional

import httptools

MODEL = "fake-model"
WORDS = ["Benchmark"] + [f" word{i}" for i in range(2, 21)]  # 20 content chunks
ANSWER = "".join(WORDS)
PROMPT_TOKENS = 8
USAGE = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(WORDS), "total_tokens": PROMPT_TOKENS + len(WORDS)}
CHAT_PATHS = (b"/v1/chat/completions", b"/chat/completions")


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body


def _chunk(data: bytes) -> bytes:
    """One HTTP chunk (chunked transfer-encoding)."""
    return f"{len(data):x}\r\n".encode("latin-1") + data + b"\r\n"


def _event(payload: dict) -> bytes:
    return _chunk(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")


def _delta(delta: dict, finish_reason: Optional[str] = None) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


PLAIN = _response("200 OK", json.dumps({
    "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
    "usage": USAGE,
}).encode())
STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
STREAM_EVENTS = [_event(_delta({"role": "assistant", "content": WORDS[0]}))]
STREAM_EVENTS += [_event(_delta({"content": word})) for word in WORDS[1:]]
STREAM_EVENTS.append(_event(_delta({}, "stop")))
USAGE_EVENT = _event({**_delta({}), "choices": [], "usage": USAGE})
STREAM_END = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
NOT_FOUND = _response("404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error","code":404}}')
BAD_BODY = _response("400 Bad Request", b'{"error":{"message":"body is not JSON","type":"invalid_request_error"}}')
MODELS = _response("200 OK", json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode())


class FakeUpstream(asyncio.Protocol):
    """One connection: parse requests with httptools, answer from the pre-built bytes."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Optional[asyncio.Transport] = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(_response("400 Bad Request", b""))
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, body = self.url.split(b"?", 1)[0], b"".join(self.body)
        self.url, self.body = b"", []
        if url.endswith(b"/models"):
            self.transport.write(MODELS)
        elif url not in CHAT_PATHS:
            self.transport.write(NOT_FOUND)
        else:
            try:
                request = json.loads(body)
            except ValueError:
                self.transport.write(BAD_BODY)
                return
            if request.get("stream"):
                usage = bool((request.get("stream_options") or {}).get("include_usage"))
                self.transport.pause_reading()  # one answer at a time on this connection
                self.transport.write(STREAM_HEAD)
                asyncio.get_running_loop().call_soon(self._stream, 0, usage, self.parser.should_keep_alive())
                return
            self.transport.write(PLAIN)
        if not self.parser.should_keep_alive():
            self.transport.close()

    def _stream(self, index: int, usage: bool, keep_alive: bool) -> None:
        if self.transport.is_closing():
            return
        if index < len(STREAM_EVENTS):
            self.transport.write(STREAM_EVENTS[index])
            asyncio.get_running_loop().call_soon(self._stream, index + 1, usage, keep_alive)
            return
        self.transport.write((USAGE_EVENT if usage else b"") + STREAM_END)
        if keep_alive:
            self.transport.resume_reading()
        else:
            self.transport.close()


async def serve(host: str, port: int) -> asyncio.base_events.Server:
    return await asyncio.get_running_loop().create_server(FakeUpstream, host, port, backlog=1024)


async def _main(host: str, port: int) -> None:
    server = await serve(host, port)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    print(f"fake upstream on http://{host}:{port}/v1", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8400)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_main(args.host, args.port))


if __name__ == "__main__":
    main()

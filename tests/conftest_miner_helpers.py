"""Helpers for tests/test_miner.py: real servers in background threads, signed requests, SSE parsing.

Servers run on their own event loop in a daemon thread, so a module-scoped
server outlives each test's (function-scoped) event loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from contextlib import contextmanager
from typing import Any, Iterator

import uvicorn
from aiohttp import web

from shared.auth import Signer


def bound_socket() -> socket.socket:
    """A listening-ready socket on a free 127.0.0.1 port (no race between picking and binding)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def config_thread(config: uvicorn.Config) -> Iterator[int]:
    """Serve ``config`` in a thread on a free 127.0.0.1 port; yield the port once the server has started."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


@contextmanager
def uvicorn_thread(app: Any, sock: socket.socket, timeout: float = 10.0, http: Any = "auto") -> Iterator[str]:
    """Run ``app`` with uvicorn on ``sock``; yield its base URL once ``/health`` answers."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", http=http))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + timeout
    while True:
        if not thread.is_alive():
            raise RuntimeError("the server thread exited during start-up (see the captured log)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base}/health did not answer within {timeout}s")
        if server.started:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
        time.sleep(0.02)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def signed(signer: Signer, method: str, path: str, body: Any, receiver: str) -> tuple[bytes, dict[str, str]]:
    """The exact bytes to send and their ``btauth/1`` headers."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    headers = signer.headers(method, path, raw, receiver=receiver)
    if raw:
        headers["Content-Type"] = "application/json"
    return raw, headers


def sse_events(text: str) -> list[str]:
    """The ``data`` of each event in a ``text/event-stream`` body."""
    events = []
    for block in text.split("\n\n"):
        lines = [line[len("data: "):] for line in block.split("\n") if line.startswith("data: ")]
        if lines:
            events.append("\n".join(lines))
    return events


def upstream_sse(payload: Any) -> bytes:
    return b"data: " + (payload if isinstance(payload, str) else json.dumps(payload)).encode() + b"\n\n"


class FakeUpstream:
    """A tiny OpenAI-compatible server (aiohttp) that records what it was sent.

    Model ``up-fail`` answers 503; ``up-midfail`` sends one piece, then an error event; ``up-ragged``
    sends its events with CRLF line ends, one split over two ``data:`` lines, in 7-byte writes (``up-cr``: the
    same with a lone CR ending each line, as the SSE format allows); ``up-text`` labels its answers ``text/plain``;
    ``up-slow`` sends 200 pieces 50 ms apart and notes in ``abandoned`` when its reader leaves; ``up-json``
    answers a whole ``chat.completion`` although a stream was asked for. ``peers`` holds the client address
    of every request, so kept connections show.
    """

    PIECES = ["Hello", " from", " upstream"]

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.abandoned: list[str] = []
        self.peers: list[tuple] = []

    async def chat(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        self.requests.append((dict(request.headers), payload))
        self.peers.append(request.transport.get_extra_info("peername"))
        model = payload.get("model")
        if model == "up-fail":
            return web.json_response({"error": {"message": "model overloaded", "type": "server_error"}}, status=503)
        if not payload.get("stream") or model == "up-json":
            message = {"role": "assistant", "content": "".join(self.PIECES)}
            whole = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
            if model == "up-text":  # a small server that labels everything text/plain
                return web.Response(body=json.dumps(whole).encode(), content_type="text/plain")
            return web.json_response(whole)
        response = web.StreamResponse(headers={"Content-Type": "text/plain" if model == "up-text"
                                               else "text/event-stream"})
        await response.prepare(request)
        if model in ("up-ragged", "up-cr"):
            await self.ragged(response, line_end=b"\r\n" if model == "up-ragged" else b"\r")
            return response
        if model == "up-slow":
            await self.slow(response)
            return response
        for i, piece in enumerate(self.PIECES):
            if model == "up-midfail" and i == 1:
                await response.write(upstream_sse({"error": {"message": "GPU fell over"}}))
                await response.write(upstream_sse("[DONE]"))
                return response
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            await response.write(upstream_sse(chunk))
        await response.write(upstream_sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        if (payload.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
            await response.write(upstream_sse({"choices": [], "usage": usage}))
        await response.write(upstream_sse("[DONE]"))
        return response

    async def ragged(self, response: web.StreamResponse, line_end: bytes) -> None:
        events = [upstream_sse(content_chunk(piece)).replace(b"\n", line_end) for piece in self.PIECES]
        events[1] = events[1].replace(b', "finish_reason"', line_end + b'data: , "finish_reason"', 1)
        stream = b"".join(events) + b"data: [DONE]" + line_end * 2
        for start in range(0, len(stream), 7):
            await response.write(stream[start:start + 7])
            await asyncio.sleep(0.001)

    async def slow(self, response: web.StreamResponse) -> None:
        try:
            for i in range(200):
                await response.write(upstream_sse(content_chunk(f"w{i} ")))
                await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.CancelledError):
            self.abandoned.append("up-slow")
            raise
        await response.write(upstream_sse("[DONE]"))


def content_chunk(piece: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}


@contextmanager
def aiohttp_thread(app: web.Application) -> Iterator[str]:
    """Serve an aiohttp app on a free port in a background loop; yield its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app)
    sock = bound_socket()

    async def start() -> None:
        await runner.setup()
        await web.SockSite(runner, sock).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()

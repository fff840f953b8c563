"""The benchmark's load client against real servers on 127.0.0.1: what it counts as an answer and as an error.

A benchmark that counts broken answers as served would report a fast gateway
that is not working, so each way an answer can be wrong is served for real
(a raw asyncio server writing exact bytes) and must land in ``errors``.
"""

from __future__ import annotations

import asyncio

import pytest
from openai import AsyncOpenAI

from bench.fake_upstream import ANSWER
from bench.fake_upstream import serve as serve_fake_upstream
from bench.loadclient import build_request, drive

PLAIN_OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
SERVER_ERROR = (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
                b"{}")
STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


EVENT = b'data: {"choices": []}\n\n'
WHOLE_STREAM = STREAM_HEAD + chunk(EVENT) + chunk(b"data: [DO") + chunk(b"NE]\n\n") + b"0\r\n\r\n"
CUT_STREAM = STREAM_HEAD + chunk(EVENT)  # then the server closes: no [DONE], no last chunk
NO_DONE_STREAM = STREAM_HEAD + chunk(EVENT) + b"0\r\n\r\n"
ERROR_EVENT_STREAM = (STREAM_HEAD + chunk(EVENT + b'data: {"err') + chunk(b'or": {"message": "x"}}\n\n')
                      + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


async def canned_server(answer: bytes, *, close_after: bool = False) -> tuple[asyncio.AbstractServer, int]:
    """Reads each request whole (head and Content-Length body), writes ``answer``; closes after it if told."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                writer.write(answer)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def load(port: int, *, stream: bool, concurrency: int = 2, seconds: float = 0.3):
    request = build_request("POST", f"127.0.0.1:{port}", "/v1/chat/completions",
                            {"Content-Type": "application/json"}, b'{"model": "default", "messages": []}')
    return await drive("127.0.0.1", port, lambda: request, concurrency=concurrency, seconds=seconds, stream=stream)


@pytest.mark.parametrize("answer, stream", [(PLAIN_OK, False), (WHOLE_STREAM, True)])
async def test_whole_answers_are_counted_with_a_latency_each(answer, stream):
    server, port = await canned_server(answer)
    async with server:
        result = await load(port, stream=stream)
    assert result.errors == 0
    assert len(result.latencies_ms) > 10  # keep-alive: many requests on two connections in 0.3 s
    assert all(latency > 0 for latency in result.latencies_ms)


async def test_a_paced_run_sends_at_the_rate_not_back_to_back():
    server, port = await canned_server(PLAIN_OK)
    request = build_request("POST", f"127.0.0.1:{port}", "/", {}, b"")
    async with server:
        paced = await drive("127.0.0.1", port, lambda: request, concurrency=4, seconds=1.0, stream=False, rate=100.0)
        free = await drive("127.0.0.1", port, lambda: request, concurrency=4, seconds=0.3, stream=False)
    assert paced.errors == 0 and free.errors == 0
    # 100/s for 1 s over 4 connections (each starts at a random point of its first 40 ms): about 100, never 200
    assert 80 <= len(paced.latencies_ms) <= 110
    assert len(free.latencies_ms) > 200  # the same server back to back: far more in less time


@pytest.mark.parametrize("answer, stream, close_after", [
    (SERVER_ERROR, False, False),
    (CUT_STREAM, True, True),
    (NO_DONE_STREAM, True, False),
    (ERROR_EVENT_STREAM, True, False),
    (PLAIN_OK[:-3], False, True),  # fewer body bytes than Content-Length, then the connection closes
])
async def test_broken_answers_are_errors_not_requests(answer, stream, close_after):
    server, port = await canned_server(answer, close_after=close_after)
    async with server:
        result = await load(port, stream=stream)
    assert result.latencies_ms == []
    assert result.errors > 2


async def test_a_server_that_closes_after_each_answer_is_reconnected():
    server, port = await canned_server(PLAIN_OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
                                       close_after=True)
    async with server:
        result = await load(port, stream=False)
    assert result.errors == 0
    assert len(result.latencies_ms) > 2


async def test_no_server_is_all_errors_and_the_run_still_ends():
    server, port = await canned_server(PLAIN_OK)
    server.close()
    await server.wait_closed()
    result = await asyncio.wait_for(load(port, stream=False), timeout=10)
    assert result.latencies_ms == []
    assert result.errors > 0


async def test_a_stalled_answer_is_an_error_after_the_grace_period():
    async def never_answer(reader, writer):
        await reader.read(1)
        await asyncio.sleep(30)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = build_request("POST", f"127.0.0.1:{port}", "/", {}, b"{}")
    async with server:
        result = await asyncio.wait_for(
            drive("127.0.0.1", port, lambda: request, concurrency=3, seconds=0.1, stream=False, grace=0.3), timeout=10)
    assert result.latencies_ms == []
    assert result.errors == 3


@pytest.mark.parametrize("stream", [False, True])
async def test_the_fake_upstream_answers_openai_requests_the_client_accepts(stream):
    server = await serve_fake_upstream("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": %s}' % (
        b"true" if stream else b"false")
    request = build_request("POST", f"127.0.0.1:{port}", "/v1/chat/completions",
                            {"Content-Type": "application/json"}, body)
    async with server:
        result = await drive("127.0.0.1", port, lambda: request, concurrency=2, seconds=0.3, stream=stream)
    assert result.errors == 0
    assert len(result.latencies_ms) > 10


async def test_the_fake_upstream_speaks_openai_to_the_official_sdk():
    server = await serve_fake_upstream("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    async with server:
        whole = await client.chat.completions.create(model="m", messages=messages)
        stream = await client.chat.completions.create(model="m", messages=messages, stream=True,
                                                      stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
        await client.close()
    assert whole.choices[0].message.content == ANSWER
    contents = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert len(contents) == 20 and "".join(contents) == ANSWER
    assert chunks[-1].usage.completion_tokens == 20

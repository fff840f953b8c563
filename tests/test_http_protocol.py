"""uvicorn with what one turn of the event loop writes sent in one write (``shared.coalesced_writes``).

Raw sockets on 127.0.0.1 check what a client actually receives: whole
answers, a stream's head sent while the app waits for its first chunk (never
held back), HEAD answers, ``Expect: 100-continue`` that still gets its
interim answer before the body is sent, and keep-alive across requests.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn

from shared.coalesced_writes import CoalescingHttpProtocol


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    payload = b"echo:" + body
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture
async def port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        number = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=number, http=CoalescingHttpProtocol,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield number
    server.should_exit = True
    await task


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head, await asyncio.wait_for(reader.readexactly(length), 2)


async def test_whole_answers_and_keep_alive(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for word in (b"one", b"two"):
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(word), word))
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"echo:" + word
    writer.close()


async def test_a_stream_head_is_not_held_back_while_the_app_waits(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.25)  # the app sleeps 0.3 s before its chunk
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    received = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 2)
    assert b"5\r\nfirst\r\n" in received
    writer.close()


async def test_head_requests_are_answered(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    writer.close()


async def test_expect_100_continue_gets_its_interim_answer_first(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"body")
    head, body = await read_answer(reader)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"echo:body"
    writer.close()

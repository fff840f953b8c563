"""Our HTTP protocol (``shared.serving`` with ``shared.lean_cycle``) answers byte for byte as uvicorn's own.

Each case sends the same raw bytes to two servers on 127.0.0.1 running the same ASGI app: one with
uvicorn's plain httptools protocol, one with the protocol our processes run (the connection limits, the
coalesced writes, plain requests on the lean cycle). The answers must be equal (the ``date`` header
aside), and so must whether the server closed the connection. The cases include what a hostile or odd
client sends (pipelined requests, HTTP/1.0, a body in pieces, ``Connection: close``, a query and escapes
that take uvicorn's own path) and what a faulty app sends (a header with CR/LF or a bad name, an
exception before or after the response started, a response shorter than its length).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from typing import ContextManager, Iterator

import pytest
import uvicorn
from conftest_miner_helpers import config_thread
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.asgi import read_body
from shared.lean_cycle import LeanCycle, Signal
from shared.serving import server_config
from shared.settings import CommonSettings

DATE = re.compile(rb"date: [^\r]*\r\n")


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for piece in (b"one", b"", b"two"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/stream-ends-with-data":  # the last piece carries data: body and terminator in one write
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})
        return
    if path == "/in-parts":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        await send({"type": "http.response.body", "body": b"67890"})
        return
    if path == "/long":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
        await send({"type": "http.response.body", "body": b"12345"})
        return
    if path == "/inject":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-echo", b"ok\r\nset-cookie: stolen=1"), (b"content-length", b"0")]})
        return
    if path == "/bad-name":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x bad", b"1"), (b"content-length", b"0")]})
        return
    if path == "/fails-first":
        raise RuntimeError("before the response")
    if path == "/fails-after":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        raise RuntimeError("mid-response")
    if path == "/short":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345"})
        return
    if path == "/close":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"Content-Length", b"2"), (b"Connection", b"Keep-Alive, Close")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    payload = b"%s %s %s %s|" % (scope["method"].encode(), scope["raw_path"], scope["query_string"],
                                  scope["http_version"].encode()) + body
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"Content-Type", b"text/plain\tutf-8"), (b"content-length", b"%d" % len(payload))]})
    await send({"type": "http.response.body", "body": payload})


def server(ours: bool) -> ContextManager[int]:
    options = dict(log_level="critical", lifespan="off", proxy_headers=False, access_log=False)  # as our processes run
    if ours:
        return config_thread(server_config(app, CommonSettings(), coalesce=True, **options))
    return config_thread(uvicorn.Config(app, http=HttpToolsProtocol, **options))


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int]]:
    with server(ours=False) as theirs, server(ours=True) as ours:
        yield theirs, ours


def without_access_log(monkeypatch) -> None:
    """No access log, as our API worker runs: pytest hangs its capture handlers on uvicorn's access logger for
    each test's call, and a protocol that sees a handler logs every request (and sends its head uvicorn's way)."""
    access = logging.getLogger("uvicorn.access")
    monkeypatch.setattr(access, "handlers", [])
    monkeypatch.setattr(access, "propagate", False)


def exchange(port: int, pieces: list[bytes]) -> tuple[bytes, bool]:
    """Send ``pieces`` (a short pause between them), read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index, piece in enumerate(pieces):
            if index:
                time.sleep(0.05)
            sock.sendall(piece)
        sock.settimeout(0.5)
        received = b""
        closed = False
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            received += data
    return DATE.sub(b"", received), closed


POST = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
CASES = {
    "whole answer, kept alive": [POST + POST],
    "a body in pieces": [b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello", b"world"],
    "a chunked request body": [b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"5\r\nhello\r\n0\r\n\r\n"],
    "pipelined": [POST + b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n" + POST],
    "a query and escapes (uvicorn's own path)": [b"GET /echo%20x?a=1&b=%2F HTTP/1.1\r\nHost: x\r\n\r\n"],
    "HTTP/1.0": [b"GET /echo HTTP/1.0\r\n\r\n"],
    "the client asks to close": [b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    "the app asks to close": [b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n"],
    "HEAD": [b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n"],
    "a chunked answer": [b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"],
    "a chunked answer whose last piece has data": [b"GET /stream-ends-with-data HTTP/1.1\r\nHost: x\r\n\r\n"] * 2,
    "an answer in parts": [b"GET /in-parts HTTP/1.1\r\nHost: x\r\n\r\n"] * 2,
    "an answer longer than its length": [b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n"],
    "CR/LF in a header value": [b"GET /inject HTTP/1.1\r\nHost: x\r\n\r\n"],
    "a bad header name": [b"GET /bad-name HTTP/1.1\r\nHost: x\r\n\r\n"],
    "the app fails first": [b"GET /fails-first HTTP/1.1\r\nHost: x\r\n\r\n"],
    "the app fails mid-answer": [b"GET /fails-after HTTP/1.1\r\nHost: x\r\n\r\n"],
    "an answer shorter than its length": [b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n"],
    "expect 100-continue": [b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
                            b"hello"],
    "a malformed request": [b"GET /echo HTTP/1.1\r\nHost x\r\n\r\n"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_bytes_as_uvicorn(ports, case, monkeypatch):
    without_access_log(monkeypatch)
    theirs, ours = ports
    expected = exchange(theirs, CASES[case])
    assert expected[0] or expected[1], "the case must produce an answer or a close to compare"
    assert exchange(ours, CASES[case]) == expected


def test_the_plain_path_is_the_one_taken(ports, monkeypatch):
    """The lean cycle really serves plain requests (else the comparison above would compare uvicorn with itself)."""
    built: list[str] = []
    original = LeanCycle.__init__

    def counting(self, scope, protocol, keep_alive):
        built.append(scope["path"])
        original(self, scope, protocol, keep_alive)

    monkeypatch.setattr(LeanCycle, "__init__", counting)
    without_access_log(monkeypatch)
    _, ours = ports
    exchange(ours, [POST, b"GET /echo?a=1 HTTP/1.1\r\nHost: x\r\n\r\n"])
    assert built == ["/echo"]


async def test_a_signal_wakes_every_waiter_and_stays_set_until_cleared():
    signal = Signal()
    waiters = [asyncio.ensure_future(signal.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    signal.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert signal.is_set() and await signal.wait()
    signal.clear()
    assert not signal.is_set()

"""A lean HTTP/1.1 keep-alive load client: one connection per concurrent client.

    result = await drive("127.0.0.1", 8000, lambda: request_bytes, concurrency=32, seconds=5.0, stream=True)
    result.latencies_ms, result.errors
    await drive(…, concurrency=32, seconds=5.0, stream=False, rate=1000.0)   # paced: at most 1000 requests/s

Why not aiohttp: on a small machine the load generator shares the cores with
the servers it measures, so every microsecond it spends per request is taken
from them. Here each connection is an :class:`asyncio.Protocol` that sends its
next request from the callback that completes the previous response: a request
costs one write, the parse of its reply (httptools, the parser uvicorn uses)
and one latency sample; no task, future or header dict per request.

A response counts as good when its status is 200, it arrived whole (the parser
checks Content-Length and chunked framing) and, for a stream, its body ends
with the ``[DONE]`` event and carries no ``data: {"error"`` event. Anything
else, including a connection that closes or stalls mid-response, is an error.

With ``rate`` each connection sends at most ``rate / concurrency`` requests per
second, on a fixed schedule (the first at a random point of its interval), so
that two set-ups can be compared at the same offered load; a connection whose
answer comes after its next slot sends at once (the load then falls behind the
rate, which the result's rps shows).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import httptools

DONE = b"[DONE]\n\n"
ERROR_EVENT = b'data: {"error"'
TAIL = max(len(DONE), len(ERROR_EVENT))
RECONNECT_PAUSE = 0.01  # after a refused connection, so that a dead server is not hammered in a tight loop


def request_head(method: str, host: str, target: str, headers: dict[str, str], content_length: int) -> bytes:
    """The request line and header lines, each ending CRLF; the blank line that closes the head is not included."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {content_length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return "".join(line + "\r\n" for line in lines).encode("latin-1")


def build_request(method: str, host: str, target: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """The bytes of one whole HTTP/1.1 request."""
    return request_head(method, host, target, headers, len(body)) + b"\r\n" + body


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)  # perf_counter() at each good answer's end, in order
    errors: int = 0
    elapsed: float = 0.0


class _Run:
    """What the connections of one run share: the request factory, the clock, the tallies."""

    def __init__(self, make_request: Callable[[], bytes], stream: bool, stop_at: float, interval: float = 0.0):
        self.make_request = make_request
        self.interval = interval  # seconds between one connection's requests; 0: back to back
        self.stream = stream
        self.stop_at = stop_at
        self.result = Result()
        self.open: set[_Connection] = set()


class _Connection(asyncio.Protocol):
    def __init__(self, run: _Run, closed: asyncio.Future):
        self.run = run
        self.closed = closed
        self.transport: Optional[asyncio.Transport] = None
        self.parser = httptools.HttpResponseParser(self)
        self.started = 0.0  # perf_counter() when the request in flight was sent; 0.0: none in flight
        self.status = 0
        self.keep_alive = True
        self.tail = b""
        self.bad_event = False
        self.next_at = 0.0  # paced: perf_counter() of this connection's next slot

    # -- transport callbacks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.run.open.add(self)
        if self.run.interval:
            self.next_at = time.perf_counter() + random.random() * self.run.interval
        self.send_when_due()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.started:  # the server closed (or we aborted) with an answer still owed
            self.run.result.errors += 1
            self.started = 0.0
        self.run.open.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- parser callbacks -------------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.run.stream:
            joined = self.tail + body
            if ERROR_EVENT in joined:
                self.bad_event = True
            self.tail = joined[-TAIL:]

    def on_message_complete(self) -> None:
        run = self.run
        ok = self.status == 200 and (not run.stream or (self.tail.endswith(DONE) and not self.bad_event))
        if ok:
            now = time.perf_counter()
            run.result.latencies_ms.append((now - self.started) * 1000.0)
            run.result.finished.append(now)
        else:
            run.result.errors += 1
        self.started = 0.0
        if self.keep_alive:
            self.send_when_due()
        else:
            self.transport.close()

    # -- requests ---------------------------------------------------------------------------------
    def send_when_due(self) -> None:
        if not self.run.interval:
            self.send()
            return
        delay = self.next_at - time.perf_counter()
        self.next_at = max(self.next_at, time.perf_counter()) + self.run.interval
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.send)
        else:
            self.send()

    def send(self) -> None:
        if self.transport.is_closing():
            return
        if time.monotonic() >= self.run.stop_at:
            self.transport.close()
            return
        self.status = 0
        self.tail = b""
        self.bad_event = False
        self.started = time.perf_counter()
        self.transport.write(self.run.make_request())

    def fail(self) -> None:
        """An unreadable response: count it (connection_lost does) and drop the connection."""
        self.transport.abort()


async def _client(run: _Run, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    while time.monotonic() < run.stop_at:
        closed = loop.create_future()
        try:
            await loop.create_connection(lambda: _Connection(run, closed), host, port)
        except OSError:
            run.result.errors += 1
            await asyncio.sleep(RECONNECT_PAUSE)
            continue
        await closed


async def drive(host: str, port: int, make_request: Callable[[], bytes], *, concurrency: int, seconds: float,
                stream: bool, grace: float = 60.0, rate: float = 0.0) -> Result:
    """``concurrency`` connections, each sending ``make_request()`` back to back for ``seconds``
    (or, with ``rate``, paced so that together they send at most ``rate`` requests per second).

    Requests still unanswered ``grace`` seconds after the end are counted as
    errors and their connections aborted.
    """
    began = time.monotonic()
    run = _Run(make_request, stream, began + seconds, concurrency / rate if rate > 0 else 0.0)
    clients = [asyncio.ensure_future(_client(run, host, port)) for _ in range(concurrency)]
    _, pending = await asyncio.wait(clients, timeout=seconds + grace)
    for connection in list(run.open):
        connection.transport.abort()
    for task in pending:
        task.cancel()
    await asyncio.sleep(0)  # let the aborted connections count what they still owed
    await asyncio.gather(*clients, return_exceptions=True)
    run.result.elapsed = time.monotonic() - began
    return run.result

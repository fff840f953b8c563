"""A pooled HTTP/1.1 client for the hottest hops: signed POSTs to miners, and a miner's POSTs upstream.

    pool = HttpPool()                                   # once per process
    async with pool.post("127.0.0.1", 8101, "/v1/chat/completions", headers, body,
                         connect_timeout=3, read_timeout=30) as response:
        response.status                                 # int
        async for piece in response.content.iter_any(): ...   # body pieces as they arrive (SSE), or
        payload = await response.read()                 # the whole body
    await pool.close()

Why not aiohttp: every request to a miner went through aiohttp's client,
which costs about ten times the CPU of this one (a measured 300 µs against
30 µs per call, client and a trivial server together, on the benchmark
machine): request objects, tracing hooks, cookie jars, header multidicts, a
stream reader, none of which a JSON POST to a known peer needs.
This client writes the request as one buffer, parses the answer with
``httptools`` (the parser uvicorn uses), and keeps connections alive per
host for the next call. It speaks only what our hops need: plain HTTP/1.1
(no TLS: ``SignedClient`` sends ``https://`` addresses through aiohttp),
``Content-Length`` or chunked answers, no redirects.

Failures are ``OSError`` (refused, reset, closed mid-answer, malformed) or
``TimeoutError`` (no byte for ``read_timeout``), which is what callers
already handle for aiohttp. A connection is reused only when its last answer
was read to the end and the server allowed keep-alive; idle ones are dropped
before a server's usual keep-alive timeout (uvicorn's is 5 s) so a request is
rarely sent on a connection the server is closing. When it happens anyway (a
server with a shorter keep-alive) and the connection closes before any byte
of an answer, the request is sent once more on a new connection: the server
dropped it unread, so its nonce was never used.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Optional

import httptools

from .lazy_deadline import LazyDeadline

IDLE_SECONDS = 3.0  # below uvicorn's 5 s keep-alive, so the server never closes one we are about to use
MAX_IDLE_PER_HOST = 256
HIGH_WATER = 1 << 20  # unread bytes at which the socket stops being read, until the reader catches up
MAX_HEAD_BYTES = 64 * 1024  # an answer's status line and headers; past it the answer is broken (see ``data_received``)


class BrokenAnswer(ConnectionError):
    """The server closed the connection mid-answer, or sent something that is not HTTP/1.1."""


class TooLarge(Exception):
    """An answer bigger than the caller accepts."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request in flight; callbacks from ``httptools``."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.pieces: deque[bytes] = deque()
        # A body piece is appended by the deque's own method, with no Python frame per piece: a stream's
        # events are an HTTP chunk each, and httptools calls ``on_body`` for every one. (httptools takes its
        # callbacks from the protocol when the parser is made, so this is set before.)
        self.on_body = self.pieces.append
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._loop = asyncio.get_running_loop()
        self._deadline = LazyDeadline(self._loop, self._timed_out)  # the read timeout (and the total, if any)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.answered = False  # any byte of an answer arrived on this request
        self.content_type = ""  # the media type, lower case, without parameters
        self.headers: dict[str, str] = {}  # only the few a caller asks for, by lower-case name
        self.framed = False  # Content-Length or chunked; otherwise the body ends when the server closes
        self.headers_done = False
        self.complete = False
        self.error: Optional[Exception] = None
        self.pieces.clear()
        self.buffered = 0  # unread body bytes, over-counted by the chunks' framing (see ``data_received``)
        self.head_bytes = 0  # bytes read before the headers were complete
        self.paused = False
        self.waiter: Optional[asyncio.Future] = None
        self.until: Optional[float] = None  # the loop time by which the whole answer must be in (``total_timeout``)

    # -- asyncio.Protocol ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        if self.error is not None:
            return  # failed already (the connection is closing): nothing more is parsed
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BrokenAnswer("the server tried to upgrade the connection"))
        except httptools.HttpParserError as exc:
            self._fail(BrokenAnswer(f"malformed HTTP answer: {exc}"))
        else:
            if self.pieces:  # the body pieces of this read (one wake for all: a stream's read holds many)
                # Counted by the read, not by the piece (``on_body`` is the deque's append): the read's size
                # bounds its pieces from above, so the socket is paused at the latest when they pass the mark.
                self.buffered += len(data)
                if self.buffered > HIGH_WATER and not self.paused:
                    self.paused = True
                    self.transport.pause_reading()
                self._wake()
            elif not self.headers_done:
                # Reads that end with the headers still incomplete: httptools keeps a header of any size and
                # grows it by copying, so a server sending megabytes of one held a worker's loop for seconds
                # and its memory grew with it. (A read that completes the headers is not counted: its body
                # part is no header.)
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD_BYTES:
                    self._fail(BrokenAnswer(f"answer headers larger than {MAX_HEAD_BYTES} bytes"))

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self._deadline.stop()
        if self.headers_done and not self.framed and self.error is None:
            self.complete = True  # an answer without a length ends with its connection
        if not self.complete:
            self.error = self.error or BrokenAnswer("connection closed before the answer ended")
        self._wake()

    # -- httptools callbacks ---------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if not self.framed and name in (b"content-length", b"transfer-encoding"):
            self.framed = True
        elif name == b"content-type":
            self.content_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
        elif name == b"btsession-error":  # a refused session request (shared.sessions): the sender re-sends it
            self.headers[name.decode()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        if not self.parser.should_keep_alive():
            self.closed = True
            self.transport.close()
        self._wake()

    # -- used by the response --------------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        self.error = exc
        self.closed = True
        self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, read_timeout: float) -> None:
        """Until something happens (headers, a body piece, the end, a failure), or ``TimeoutError`` after
        ``read_timeout`` seconds of nothing or once the request's total time is up (``until``), on the
        connection's one lazy timer (``shared.lazy_deadline``)."""
        timeout = read_timeout
        if self.until is not None:
            timeout = self.until - self._loop.time()
            if timeout <= 0:
                raise TimeoutError()
            timeout = min(timeout, read_timeout)
        self.waiter = waiter = self._loop.create_future()
        self._deadline.set(timeout)
        try:
            await waiter
        finally:
            self.waiter = None
            self._deadline.clear()

    def _timed_out(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())

    def take(self) -> bytes:
        data = b"".join(self.pieces) if len(self.pieces) != 1 else self.pieces[0]
        self.pieces.clear()
        self.buffered = 0
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        return data


class PooledResponse:
    """The answer to one request: ``status``, then the body, read once (in pieces or whole)."""

    def __init__(self, connection: _Connection, read_timeout: float):
        self._connection = connection
        self._read_timeout = read_timeout
        self.status = connection.status
        self.content_type = connection.content_type  # as aiohttp's: "application/json", no parameters
        self.headers = connection.headers  # lower-case names; only ``btsession-error`` is kept
        self.content = self  # aiohttp's shape: ``response.content.iter_any()``

    def iter_any(self) -> "BodyPieces":
        """The body as it arrives, a piece per read: ``async for piece in response.content.iter_any()``."""
        return BodyPieces(self._connection, self._read_timeout)

    async def read(self, max_bytes: Optional[int] = None) -> bytes:
        """The whole body (``iter_any``'s steps, without an async generator for the common case); ``TooLarge``
        (and the connection closed) as soon as it passes ``max_bytes``, when given."""
        connection = self._connection
        parts = []
        size = 0
        while True:
            if connection.pieces:
                part = connection.take()
                parts.append(part)
                if max_bytes is not None:
                    size += len(part)
                    if size > max_bytes:
                        self.close()
                        raise TooLarge(f"answer larger than {max_bytes} bytes")
            elif connection.complete:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            elif connection.error is not None:
                raise connection.error
            else:
                await connection.wait(self._read_timeout)

    async def text(self) -> str:
        return (await self.read()).decode("utf-8", errors="replace")

    def set_total_deadline(self, until: Optional[float]) -> None:
        """The loop time by which the whole answer must be in, from now on (None: only the read timeout
        applies): a stream whose first content came in time gets the limit on a whole stream instead of
        ``HttpPool.post``'s ``total_timeout``, which bounded its start."""
        self._connection.until = until

    async def drain(self, seconds: float) -> None:
        """Read and drop what is left of the body within ``seconds`` (what follows a stream's ``[DONE]``), so
        that the connection goes back to the pool; past that, or on any failure, it is closed instead.

        Usually the body's end came in the same read as ``[DONE]`` and there is nothing to wait for: no timer
        is armed then (``shared.chat_stream.finish`` used to arm and cancel a loop timer per stream)."""
        connection = self._connection
        if connection.complete and not connection.pieces:
            return
        until = connection._loop.time() + seconds
        if connection.until is None or until < connection.until:
            connection.until = until
        try:
            await self.read()
        except Exception:  # too slow, reset, malformed: the answer itself was read already
            self.close()

    def close(self) -> None:
        """Give up on the rest of the body: the connection is closed, not reused."""
        connection = self._connection
        if not connection.complete and not connection.closed:
            connection.closed = True
            connection.transport.close()


class BodyPieces:
    """``PooledResponse.iter_any``'s iterator: a class, not an async generator. A generator is registered
    with the loop (a ``WeakSet`` entry) when first iterated and, when its reader stops before the body's end
    (a stream read up to ``[DONE]``), closed later by a task of its own; a stream paid for both."""

    __slots__ = ("_connection", "_read_timeout")

    def __init__(self, connection: _Connection, read_timeout: float):
        self._connection = connection
        self._read_timeout = read_timeout

    def __aiter__(self) -> "BodyPieces":
        return self

    async def __anext__(self) -> bytes:
        connection = self._connection
        while True:
            if connection.pieces:
                return connection.take()
            if connection.complete:
                raise StopAsyncIteration
            if connection.error is not None:
                raise connection.error
            await connection.wait(self._read_timeout)


class HttpPool:
    def __init__(self, *, idle_seconds: float = IDLE_SECONDS, max_idle_per_host: int = MAX_IDLE_PER_HOST):
        self.idle_seconds = idle_seconds
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    def _reusable(self, host: str, port: int) -> Optional[_Connection]:
        idle = self._idle.get((host, port))
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be timing out
            if not connection.closed and now - connection.idle_since < self.idle_seconds:
                connection._reset()
                return connection
            connection.transport.close()
        return None

    @staticmethod
    async def _connect(host: str, port: int, connect_timeout: float) -> _Connection:
        async with asyncio.timeout(connect_timeout):
            _, connection = await asyncio.get_running_loop().create_connection(_Connection, host, port)
        return connection

    def _release(self, host: str, port: int, connection: _Connection) -> None:
        if connection.closed or not connection.complete or connection.error is not None:
            if not connection.closed:
                connection.closed = True
                connection.transport.close()
            return
        idle = self._idle.setdefault((host, port), [])
        if len(idle) >= self.max_idle_per_host:
            connection.transport.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def post(self, host: str, port: int, path: str, headers: dict[str, str], body: bytes, *,
             connect_timeout: float, read_timeout: float, total_timeout: Optional[float] = None) -> "PooledPost":
        """``async with pool.post(…) as response``: sent on entry; the connection goes back (or closes) on exit.

        ``total_timeout``: ``TimeoutError`` once that many seconds have passed since entry without the whole
        answer read, however steadily it trickles in (the connection's lazy timer, not a loop timer per call).
        """
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        head = [f"POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {len(body)}\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} holds a line break")
            head.append(f"{name}: {value}\r\n")
        head.append("\r\n")
        return PooledPost(self, host, port, "".join(head).encode("latin-1") + body, connect_timeout, read_timeout,
                          total_timeout)

    async def _open(self, host: str, port: int, request: bytes, connect_timeout: float,
                    read_timeout: float, until: Optional[float] = None) -> _Connection:
        """A connection with ``request`` sent on it and its answer's headers read (all of it by ``until``)."""
        connection = self._reusable(host, port)
        if connection is not None:
            connection.until = until
            try:
                await self._send(connection, request, read_timeout)
                return connection
            except BrokenAnswer:
                # The server closed this idle connection as we used it (its keep-alive ran out first):
                # nothing was answered, so the request goes once more on a connection of its own.
                if connection.answered:
                    raise
        connection = await self._connect(host, port, connect_timeout)
        connection.until = until
        await self._send(connection, request, read_timeout)
        return connection

    async def _send(self, connection: _Connection, request: bytes, read_timeout: float) -> None:
        """Write the request and wait for the answer's headers; a failure closes the connection."""
        try:
            connection.transport.write(request)
            while not connection.headers_done:
                if connection.error is not None:
                    raise connection.error
                await connection.wait(read_timeout)
        except BaseException:
            if not connection.closed:
                connection.closed = True
                connection.transport.close()
            raise

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.transport.close()
        self._idle.clear()


class PooledPost:
    """What ``HttpPool.post`` returns: an async context manager, a class rather than an ``asynccontextmanager``
    (an async generator, and four more Python calls on every request of the hottest hops)."""

    __slots__ = ("_pool", "_host", "_port", "_request", "_connect_timeout", "_read_timeout", "_total_timeout",
                 "_connection")

    def __init__(self, pool: HttpPool, host: str, port: int, request: bytes, connect_timeout: float,
                 read_timeout: float, total_timeout: Optional[float] = None):
        self._pool = pool
        self._host = host
        self._port = port
        self._request = request
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = total_timeout
        self._connection: Optional[_Connection] = None

    async def __aenter__(self) -> PooledResponse:
        total = self._total_timeout
        until = None if total is None else asyncio.get_running_loop().time() + total
        self._connection = connection = await self._pool._open(self._host, self._port, self._request,
                                                                self._connect_timeout, self._read_timeout, until)
        return PooledResponse(connection, self._read_timeout)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._connection is not None:
            self._pool._release(self._host, self._port, self._connection)

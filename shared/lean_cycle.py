"""uvicorn's request/response cycle, in fewer steps for the plain request.

::

    if not start_plain(protocol):            # in the protocol's on_headers_complete (shared.serving)
        ...                                  # uvicorn's own steps

uvicorn's httptools protocol is general: every request gets an ``asyncio.Event``, a cycle built from eleven
keyword arguments, a ``receive`` that copies the body out of a ``bytearray``, and a ``send`` that runs two
regular expressions over every response header. Measured with callgrind on a trivial ASGI app (one POST
with a small body, one JSON answer) served as our processes served it (uvicorn, the connection limits,
coalesced writes): about 157,000 instructions per request, where a bare httptools protocol with one task
per request spends 20,000. Sampled by CPU time on the chat path, uvicorn's protocol and the limits were
a tenth of the API worker and a fifth of the miner (docs/performance.md, round 7).

A *plain* request here (HTTP/1.1, an origin-form target with no query or escapes, no ``Expect`` or
upgrade, not pipelined behind an unfinished one) gets a :class:`LeanCycle` instead: the same attributes
(the protocol's callbacks and uvicorn's shutdown read them), a :class:`Signal` for the event, the body
kept as ``bytes``, and a ``send`` that builds the head in one pass and checks all header names, then all
values, at once, and writes each body piece (with its chunk framing) in one step of its own. What a
client sees is what uvicorn sends (tests/test_lean_cycle.py compares the bytes): the same status line,
default headers (``server``, ``date``), ``content-length`` or chunked framing, ``connection: close`` when
the connection closes, 500 when the app fails before answering. Any other request takes uvicorn's own
cycle.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

_COLON = b": "
_CRLF = b"\r\n"
TASK_NAME = "http-request"  # a fixed name: asyncio formats a new "Task-<n>" for every task left unnamed
_CONTROL = bytes(range(0x20)) + b"\x7f"
_NOT_IN_NAMES = _CONTROL + b'()<>@,;:[]={} \t\\"'  # what uvicorn's HEADER_RE matches
_NOT_IN_VALUES = _CONTROL.replace(b"\t", b"")  # what uvicorn's HEADER_VALUE_RE matches
_FRAMING = {b"content-length", b"transfer-encoding", b"connection"}  # names whose values change the framing


class Signal:
    """``asyncio.Event``'s ``set``/``clear``/``is_set``/``wait`` for a cycle: no deque, no loop binding, no
    Python-level ``__init__`` chain (a cycle's event rarely has a waiter: the body is usually all there)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: Optional[list[asyncio.Future]] = None

    def set(self) -> None:
        self._set = True
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        return await waiter


class LeanCycle(RequestResponseCycle):
    """uvicorn's cycle for a plain request; see the module's docstring for what differs (nothing visible)."""

    def __init__(self, scope: Any, protocol: HttpToolsProtocol, keep_alive: bool):  # uvicorn's fields, set directly
        self.scope = scope
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.logger = protocol.logger
        self.access_logger = protocol.access_logger
        self.access_log = protocol.access_log
        self.default_headers = protocol.server_state.default_headers
        self.message_event = Signal()  # type: ignore[assignment]
        self.on_response = protocol.on_response_complete
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = False
        self.body = b""  # type: ignore[assignment]  # the protocol's on_body appends with +=
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: Optional[bool] = None
        self.expected_content_length = 0

    async def receive(self) -> Any:
        if not self.disconnected and not self.response_complete:
            event = self.message_event
            if not event._set:  # type: ignore[attr-defined]
                self.flow.resume_reading()
                await event.wait()
            event._set = False  # type: ignore[attr-defined]
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body = self.body
        self.body = b""  # type: ignore[assignment]
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: Any) -> None:
        if self.response_started:
            if self.response_complete or message["type"] != "http.response.body" or self.scope["method"] == "HEAD":
                await super().send(message)  # anything unusual: uvicorn's own steps (and errors)
                return
            if self.flow.write_paused and not self.disconnected:
                await self.flow.drain()
            if self.disconnected:
                return
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            if self.chunked_encoding:
                if body:
                    self.transport.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body) if not more_body
                                         else b"%x\r\n%b\r\n" % (len(body), body))
                elif not more_body:
                    self.transport.write(b"0\r\n\r\n")
            else:
                if len(body) > self.expected_content_length:
                    raise RuntimeError("Response content longer than Content-Length")
                self.expected_content_length -= len(body)
                self.transport.write(body)
            if not more_body:
                if self.expected_content_length != 0:
                    raise RuntimeError("Response content shorter than Content-Length")
                self.response_complete = True
                self.message_event.set()
                if not self.keep_alive:
                    self.transport.close()
                self.on_response()
            return
        if self.access_log or message["type"] != "http.response.start":
            await super().send(message)  # anything unusual: uvicorn's own steps
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        self.response_started = True
        status = message["status"]
        headers = message.get("headers") or ()
        content = [STATUS_LINE[status]]
        for name, value in self.default_headers:
            content += (name, _COLON, value, _CRLF)
        names = []
        values = []
        has_connection_close = False
        for name, value in headers:
            name = name.lower()
            names.append(name)
            values.append(value)
            content += (name, _COLON, value, _CRLF)
            if name in _FRAMING:
                if name == b"content-length":
                    if self.chunked_encoding is None:
                        self.expected_content_length = int(value.decode())
                        self.chunked_encoding = False
                elif name == b"transfer-encoding":
                    if value.lower() == b"chunked":
                        self.expected_content_length = 0
                        self.chunked_encoding = True
                elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                    self.keep_alive = False
                    has_connection_close = True
        # All names, then all values, checked at once for the characters uvicorn refuses (its HEADER_RE and
        # HEADER_VALUE_RE): "a" is a valid name character and a tab a valid value character, so neither
        # separator hides or makes a match; deleting is cheaper than a regular expression here.
        joined = b"a".join(names)
        if len(joined.translate(None, _NOT_IN_NAMES)) != len(joined):
            raise RuntimeError("Invalid HTTP header name.")
        joined = b"\t".join(values)
        if len(joined.translate(None, _NOT_IN_VALUES)) != len(joined):
            raise RuntimeError("Invalid HTTP header value.")
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if self.chunked_encoding is None and self.scope["method"] != "HEAD" and status not in (204, 304):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(_CRLF)
        self.transport.write(b"".join(content))


def start_plain(protocol: Any) -> bool:
    """At a request's end of headers: start a plain request on a :class:`LeanCycle` (True), or leave it (False)."""
    parser = protocol.parser
    url: bytes = protocol.url
    previous = protocol.cycle
    if (protocol.expect_100_continue or not url.startswith(b"/") or b"?" in url or b"%" in url
            or parser.get_http_version() != "1.1" or parser.should_upgrade() or protocol.root_path
            or protocol.limit_concurrency is not None or getattr(protocol.config, "reset_contextvars", False)
            or (previous is not None and not previous.response_complete)):
        return False
    scope = protocol.scope
    scope["method"] = parser.get_method().decode("ascii")
    scope["path"] = url.decode("ascii")
    scope["raw_path"] = url
    scope["query_string"] = b""
    protocol.cycle = cycle = LeanCycle(scope, protocol, parser.should_keep_alive())
    task = protocol.loop.create_task(cycle.run_asgi(protocol.app), name=TASK_NAME)
    task.add_done_callback(protocol.tasks.discard)
    protocol.tasks.add(task)
    return True

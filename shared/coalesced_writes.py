"""uvicorn's HTTP protocol, with what one turn of the event loop writes to a connection sent in one syscall.

::

    uvicorn.run(app, http=CoalescingHttpProtocol)

uvicorn writes every ASGI message to the socket as it comes: the status line
and headers, then the body, then (when streaming) each event; with uvloop
each write is its own ``send()`` system call, and on loopback each one also
wakes the reader. Here the transport uvicorn writes to gathers the writes of
the current turn of the event loop and sends them together when the turn
ends (``loop.call_soon``). A response produced without waiting (headers and
body, or a whole stream of ready events) leaves in one write; a stream that
waits between events still sends each event as soon as it waits.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FLUSH_AT_BYTES = 256 * 1024  # a turn that writes more sends it at once (flow control then applies)


class CoalescingTransport:
    """A transport whose writes wait for the end of the loop's turn; anything else goes to the real one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)
        self._size += len(data)
        if self._size >= FLUSH_AT_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

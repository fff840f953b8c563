"""How every process of ours serves HTTP: uvicorn, with connections treated as a bounded resource.

::

    serve(app, settings, host="127.0.0.1", port=8091)                 # miner, validator
    serve("api.app:create_app_from_env", settings, host=…, port=…, workers=2, factory=True, coalesce=True)

Before it listens, the process raises its open-file limit to the hard limit
(``RLIMIT_NOFILE`` soft → hard). Each connection then goes through
:class:`GuardedHttpProtocol` (uvicorn's httptools protocol, plus):

- at most ``HTTP_MAX_CONNECTIONS`` open connections per process, and at most
  ``HTTP_MAX_CONNECTIONS_PER_CLIENT`` from one client address (0: no per-address
  cap); a connection past either is reset at once, so it never holds a file
  descriptor or memory. The process cap is lowered to fit the open-file limit,
  with ``FD_RESERVE`` descriptors kept for the process's own outgoing calls;
- a request's headers must be complete ``HTTP_HEADER_TIMEOUT`` seconds after the
  connection opened (or after its first byte, for the next request on a kept
  connection), else the connection is closed: idle and slow-header connections
  do not stay;
- a request line and headers larger than ``HTTP_MAX_HEADER_BYTES`` get a 431
  and the connection is closed (uvicorn with httptools keeps any size in memory);
- a request body that stops arriving for ``HTTP_BODY_TIMEOUT`` seconds (while the
  server is ready to read it) closes the connection: no slow-body trickle holds one;
- an answer that its client stops reading for ``HTTP_WRITE_TIMEOUT`` seconds (our write
  buffer full) drops the connection: no slow reader holds an answer, or a stream's miner;
- an idle kept-alive connection is closed after ``HTTP_KEEPALIVE_TIMEOUT`` s
  (uvicorn's own ``timeout_keep_alive``);
- a plain request (no query, escapes, ``Expect`` or pipelining) runs on
  ``shared.lean_cycle``'s cycle: uvicorn's answer, byte for byte, in fewer steps.

With more than one worker, each worker listens on a socket of its own, bound to
the same address with ``SO_REUSEPORT`` (:class:`PerWorkerSocket`), and the
kernel spreads new connections over the workers by their addresses. With
uvicorn's one shared socket, every worker is woken for each new connection and
the first to run accepts all that are waiting: 32 keep-alive connections
opened together went 32/0, 22/10, 8/24 over two workers, so one worker did
most of the work while the other idled. The parent's socket only holds the
address (bound, never listening); a worker's socket closes with the worker,
so a dead worker's share goes to the others until uvicorn has replaced it.

Why uvicorn, extended, rather than another server: uvicorn with httptools and
uvloop is what every process already runs (and ``shared.coalesced_writes``
builds on its protocol); what it lacks is a per-address cap and a header
timeout (its ``limit_concurrency`` answers 503 but keeps the connection and its
descriptor; a connection that never sends a byte is never closed). Both fit in
one small protocol subclass, with no new dependency.
"""

from __future__ import annotations

import resource
import socket
import sys
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Optional

import httptools
import uvicorn
from loguru import logger
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .coalesced_writes import CoalescingHttpProtocol
from .lazy_deadline import LazyDeadline
from .lean_cycle import start_plain

FD_RESERVE = 512  # descriptors kept back for the process's own files and outgoing connections
HEADERS_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
                     b"connection: close\r\n\r\n")
REFUSAL_LOG_SECONDS = 10.0  # refused connections are logged at most this often, with their count
STARTUP_FAILURE = 3  # uvicorn's exit code when the server did not start


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 10_000
    max_per_client: int = 1_000  # 0: no per-address cap
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 64 * 1024
    write_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Any) -> "ConnectionLimits":
        return cls(settings.http_max_connections, settings.http_max_connections_per_client,
                   settings.http_header_timeout, settings.http_body_timeout, settings.http_max_header_bytes,
                   settings.http_write_timeout)

    def fitted(self, open_files: int) -> "ConnectionLimits":
        """These limits with the process cap lowered so that connections never take the last descriptors."""
        room = max(64, open_files - FD_RESERVE)
        return self if self.max_connections <= room else replace(self, max_connections=room)


def raise_open_file_limit() -> int:
    """Soft ``RLIMIT_NOFILE`` → hard (the most this process may open without privileges); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit from {} to {}: {}", soft, target, exc)
    return soft


class ConnectionGuard:
    """The limits above, for a uvicorn protocol class (mixed in before it)."""

    def __init__(self, config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)  # type: ignore[call-arg]
        self.limits: ConnectionLimits = getattr(config, "limits", None) or ConnectionLimits()
        self._address: Optional[str] = None  # set while this connection is counted
        self._refused = False
        # One lazy timer per connection for the header, body and keep-alive timeouts (shared.lazy_deadline).
        self._deadline = LazyDeadline(self.loop, self._deadline_passed)  # type: ignore[attr-defined]
        self._waiting_for_body = False  # the phase the deadline is for: headers (False) or the body (True)
        self._idle = False  # the deadline is the keep-alive wait between an answer and the next request
        self._header_bytes: Optional[int] = 0  # bytes of the request line and headers so far; None: in a body
        self._events = 0  # headers and messages completed on this connection
        self._write_stall: Optional[Any] = None  # the timer armed while the client reads none of our answer

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        state = self.server_state  # type: ignore[attr-defined]
        by_address: Counter = state.__dict__.setdefault("connections_by_address", Counter())
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, (tuple, list)) and peer else "?"
        limits = self.limits
        full = len(self.connections) >= limits.max_connections  # type: ignore[attr-defined]
        if full or (limits.max_per_client and by_address[address] >= limits.max_per_client):
            self._refused = True
            transport.abort()  # a reset: the descriptor is freed now, nothing is kept for this peer
            self._count_refusal(state, "the process's" if full else f"{address}'s")
            return
        by_address[address] += 1
        self._address = address
        super().connection_made(transport)  # type: ignore[misc]
        self._expect_headers()

    def _count_refusal(self, state: Any, whose: str) -> None:
        refused = state.__dict__["connections_refused"] = state.__dict__.get("connections_refused", 0) + 1
        now = self.loop.time()  # type: ignore[attr-defined]
        if now - state.__dict__.get("refusals_logged_at", -REFUSAL_LOG_SECONDS) >= REFUSAL_LOG_SECONDS:
            state.__dict__["refusals_logged_at"] = now
            logger.warning("connection refused at {} cap ({} refused since start; open: {}, cap {} per process, "
                           "{} per address)", whose, refused, len(self.connections),  # type: ignore[attr-defined]
                           self.limits.max_connections, self.limits.max_per_client or "no cap")

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self._refused:
            return
        self._deadline.stop()
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None
        if self._address is not None:
            by_address: Counter = self.server_state.__dict__["connections_by_address"]  # type: ignore[attr-defined]
            by_address[self._address] -= 1
            if by_address[self._address] <= 0:
                del by_address[self._address]
            self._address = None
        super().connection_lost(exc)  # type: ignore[misc]

    # The parser's callbacks below do uvicorn's work for each step (httptools_impl.HttpToolsProtocol, whose
    # attributes they keep) and the limits' in one call, not two or three: at a few thousand instructions a
    # Python call, a request's steps were a large part of what a small request cost (shared.lean_cycle).

    def data_received(self, data: bytes) -> None:
        keep_alive = self.timeout_keep_alive_task  # type: ignore[attr-defined]
        if keep_alive is not None:
            keep_alive.cancel()
            self.timeout_keep_alive_task = None
        events = self._events
        try:
            self.parser.feed_data(data)  # type: ignore[attr-defined]
        except httptools.HttpParserError:
            message = "Invalid HTTP request received."
            self.logger.warning(message)  # type: ignore[attr-defined]
            self.send_400_response(message)  # type: ignore[attr-defined]
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():  # type: ignore[attr-defined]
                self.handle_websocket_upgrade()  # type: ignore[attr-defined]
            else:
                self._unsupported_upgrade_warning()  # type: ignore[attr-defined]
            return
        if self._header_bytes is None or self._refused or self._events != events:
            return  # in a body, or a request's headers or body ended within this chunk: not all of it was headers
        self._header_bytes += len(data)
        if self._header_bytes > self.limits.max_header_bytes:
            transport = self.transport  # type: ignore[attr-defined]
            if not transport.is_closing():
                transport.write(HEADERS_TOO_LARGE)
                transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers: list = []
        self.scope = {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},  # type: ignore[attr-defined]
            "http_version": "1.1",
            "server": self.server,  # type: ignore[attr-defined]
            "client": self.client,  # type: ignore[attr-defined]
            "scheme": self.scheme,  # type: ignore[attr-defined]
            "root_path": self.root_path,  # type: ignore[attr-defined]
            "headers": self.headers,
            "state": self.app_state.copy(),  # type: ignore[attr-defined]
        }
        if self._deadline.when is None or self._idle:
            self._expect_headers()

    def on_headers_complete(self) -> None:
        self._header_bytes = None
        self._events += 1
        self._expect_body()  # no longer expected once on_message_complete has run (no body: at once)
        if not start_plain(self):
            super().on_headers_complete()  # type: ignore[misc]

    def on_body(self, body: bytes) -> None:
        self._expect_body()  # still arriving (also when the app answered without reading it)
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):  # type: ignore
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()  # type: ignore[attr-defined]
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        self._deadline.clear()
        self._header_bytes = 0  # what comes next on this connection is the next request's headers
        self._events += 1
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):  # type: ignore
            return
        cycle.more_body = False
        cycle.message_event.set()

    def on_response_complete(self) -> None:
        """uvicorn's steps at the end of an answer (count it, resume reading, start a pipelined request), with
        the keep-alive wait on this connection's lazy timer instead of a loop timer armed here and cancelled
        by the next request, at every answer."""
        keep_alive = self.timeout_keep_alive  # type: ignore[attr-defined]
        if keep_alive <= 0:
            super().on_response_complete()  # type: ignore[misc]  # closes at once: uvicorn's own way
            return
        self.server_state.total_requests += 1  # type: ignore[attr-defined]
        if self.transport.is_closing():  # type: ignore[attr-defined]
            return
        self._unset_keepalive_if_required()  # type: ignore[attr-defined]
        self.flow.resume_reading()  # type: ignore[attr-defined]
        if self.pipeline:  # type: ignore[attr-defined]
            cycle, app = self.pipeline.pop()  # type: ignore[attr-defined]
            self._start_asgi_task(cycle, app)  # type: ignore[attr-defined]
        elif self._deadline.when is None:  # nothing of a next request has arrived yet
            self._idle = True
            self._waiting_for_body = False
            self._set_deadline(keep_alive)

    def _expect_headers(self) -> None:
        timeout = self.limits.header_timeout
        self._waiting_for_body = False
        self._idle = False
        self._set_deadline(timeout if timeout > 0 else None)

    def _expect_body(self) -> None:
        timeout = self.limits.body_timeout
        self._waiting_for_body = True
        self._idle = False
        self._set_deadline(timeout if timeout > 0 else None)

    def _set_deadline(self, timeout: Optional[float]) -> None:
        if timeout is None:
            self._deadline.clear()
        else:
            self._deadline.set(timeout)

    # A client that stops reading our answer (its window full, our write buffer past the high-water mark) gets
    # ``HTTP_WRITE_TIMEOUT`` seconds to read again, then the connection is dropped: else the answer's task, its
    # buffered bytes and (for a stream) the miner call behind it stay for as long as the client likes. A loop
    # timer only while writing is paused, which an answer read as it comes never is.

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        timeout = self.limits.write_timeout
        if timeout > 0 and self._write_stall is None:
            self._write_stall = self.loop.call_later(timeout, self._write_stalled)  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None
        super().resume_writing()  # type: ignore[misc]

    def _write_stalled(self) -> None:
        self._write_stall = None
        transport = self.transport  # type: ignore[attr-defined]
        if transport is not None and not transport.is_closing():
            transport.abort()  # close() would wait to write what the client is not reading

    def _deadline_passed(self) -> None:
        flow = self.flow  # type: ignore[attr-defined]
        if self._waiting_for_body and flow is not None and flow.read_paused:
            self._expect_body()  # we stopped reading (the app is behind), not the client
            return
        transport = self.transport  # type: ignore[attr-defined]
        if transport is not None and not transport.is_closing():
            transport.close()


class GuardedHttpProtocol(ConnectionGuard, HttpToolsProtocol):
    """uvicorn's httptools protocol with the connection limits (and plain requests in fewer steps)."""


class GuardedCoalescingHttpProtocol(ConnectionGuard, CoalescingHttpProtocol):
    """:class:`shared.coalesced_writes.CoalescingHttpProtocol` with the connection limits (and plain requests
    in fewer steps: ``shared.lean_cycle``)."""


class ServerConfig(uvicorn.Config):
    """uvicorn's config plus the connection limits (it travels to worker processes with them)."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any):
        self.limits = limits
        super().__init__(app, **kwargs)


def server_config(app: Any, settings: Any, *, coalesce: bool = False, open_files: Optional[int] = None,
                  **kwargs: Any) -> ServerConfig:
    """The config :func:`serve` runs (tests build an in-thread server from it)."""
    limits = ConnectionLimits.from_settings(settings)
    if open_files is not None:
        limits = limits.fitted(open_files)
    return ServerConfig(app, limits=limits, http=GuardedCoalescingHttpProtocol if coalesce else GuardedHttpProtocol,
                        timeout_keep_alive=settings.http_keepalive_timeout, **kwargs)


def _listen_for_this_worker(family: int, address: Any) -> socket.socket:
    """In a worker process: a socket of its own on ``address``, joined to the port's ``SO_REUSEPORT`` group."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


class PerWorkerSocket(socket.socket):
    """The parent's socket for an address that every worker binds for itself (``SO_REUSEPORT``).

    uvicorn hands the parent's sockets to each worker it spawns, by pickling; this one arrives as a
    new socket of the worker's own, bound to the same address (uvicorn then listens on it), not as a
    copy of the parent's. The parent's socket is bound, so the address is taken and a clash shows at
    start, and never listens, so no connection waits on it.
    """

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return _listen_for_this_worker, (self.family, self.getsockname())


def per_worker_socket(config: uvicorn.Config) -> socket.socket:
    """A :class:`PerWorkerSocket` for ``config``'s TCP address.

    uvicorn's own socket is bound first and closed again: it has no ``SO_REUSEPORT``, so it fails (and
    the process exits, as uvicorn does) when a server already listens there, even one of ours that
    would otherwise share the port with this one.
    """
    probe = config.bind_socket()
    family, address = probe.family, probe.getsockname()
    probe.close()
    sock = PerWorkerSocket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        logger.error("cannot listen on {}: {}", address, exc)
        sys.exit(STARTUP_FAILURE)
    return sock


def serve(app: Any, settings: Any, *, coalesce: bool = False, **kwargs: Any) -> None:
    """Run ``app`` (an app, or an import string with ``workers`` > 1) until stopped; what ``uvicorn.run`` does."""
    open_files = raise_open_file_limit()
    config = server_config(app, settings, coalesce=coalesce, open_files=open_files, **kwargs)
    logger.info("serving on {}:{}: at most {} connections ({} per client address), headers within {:g}s, "
                "{} open files", config.host, config.port, config.limits.max_connections,
                config.limits.max_per_client or "any", config.limits.header_timeout, open_files)
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            from uvicorn.supervisors import Multiprocess

            spread = hasattr(socket, "SO_REUSEPORT") and config.uds is None and config.fd is None
            Multiprocess(config, sockets=[per_worker_socket(config) if spread else config.bind_socket()]).run()
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    if config.workers == 1 and not server.started:
        sys.exit(STARTUP_FAILURE)

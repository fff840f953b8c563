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
- an idle kept-alive connection is closed after ``HTTP_KEEPALIVE_TIMEOUT`` s
  (uvicorn's own ``timeout_keep_alive``).

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

import uvicorn
from loguru import logger
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .coalesced_writes import CoalescingHttpProtocol

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

    @classmethod
    def from_settings(cls, settings: Any) -> "ConnectionLimits":
        return cls(settings.http_max_connections, settings.http_max_connections_per_client,
                   settings.http_header_timeout, settings.http_body_timeout, settings.http_max_header_bytes)

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
        self._header_timer: Any = None
        self._body_timer: Any = None
        self._header_bytes: Optional[int] = 0  # bytes of the request line and headers so far; None: in a body
        self._events = 0  # headers and messages completed on this connection

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
        self._arm_header_timer()

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
        self._cancel_header_timer()
        self._cancel_body_timer()
        if self._address is not None:
            by_address: Counter = self.server_state.__dict__["connections_by_address"]  # type: ignore[attr-defined]
            by_address[self._address] -= 1
            if by_address[self._address] <= 0:
                del by_address[self._address]
            self._address = None
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        events = self._events
        super().data_received(data)  # type: ignore[misc]
        if self._header_bytes is None or self._refused or self._events != events:
            return  # in a body, or a request's headers or body ended within this chunk: not all of it was headers
        self._header_bytes += len(data)
        if self._header_bytes > self.limits.max_header_bytes:
            transport = self.transport  # type: ignore[attr-defined]
            if not transport.is_closing():
                transport.write(HEADERS_TOO_LARGE)
                transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()  # type: ignore[misc]
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self._header_bytes = None
        self._events += 1
        super().on_headers_complete()  # type: ignore[misc]
        self._arm_body_timer()  # cancelled at once by on_message_complete when there is no body

    def on_body(self, body: bytes) -> None:
        super().on_body(body)  # type: ignore[misc]
        self._arm_body_timer()

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        self._header_bytes = 0  # what comes next on this connection is the next request's headers
        self._events += 1
        super().on_message_complete()  # type: ignore[misc]

    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        if self.limits.body_timeout > 0:
            self._body_timer = self.loop.call_later(self.limits.body_timeout,  # type: ignore[attr-defined]
                                                    self._body_too_slow)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_too_slow(self) -> None:
        self._body_timer = None
        flow = self.flow  # type: ignore[attr-defined]
        if flow is not None and flow.read_paused:  # we stopped reading (the app is behind), not the client
            self._arm_body_timer()
            return
        self._headers_too_slow()

    def _arm_header_timer(self) -> None:
        if self.limits.header_timeout > 0:
            self._header_timer = self.loop.call_later(self.limits.header_timeout,  # type: ignore[attr-defined]
                                                      self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        transport = self.transport  # type: ignore[attr-defined]
        if transport is not None and not transport.is_closing():
            transport.close()


class GuardedHttpProtocol(ConnectionGuard, HttpToolsProtocol):
    """uvicorn's httptools protocol with the connection limits."""


class GuardedCoalescingHttpProtocol(ConnectionGuard, CoalescingHttpProtocol):
    """:class:`shared.coalesced_writes.CoalescingHttpProtocol` with the connection limits."""


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

"""``btauth/1`` on every internal hop, the way this project uses it.

Sender side (API worker → miner, validator → miner, API worker → validator)::

    signer = Signer(keypair)                       # a loaded hotkey, never a Wallet
    headers = signer.headers("POST", "/scoring", body, receiver=validator_hotkey)

Receiver side, as a FastAPI dependency::

    verifier = RequestVerifier(my_hotkey, nonce_store, is_allowed=lambda hk: hk in allowed)
    @app.post("/scoring")
    async def scoring(caller: Caller = Depends(verifier)): ...

The signature is checked against the raw request target and the raw body
bytes. Every ``AuthError`` becomes 401 (nothing about the caller is proven);
a valid signature from a hotkey that ``is_allowed`` rejects becomes 403.

Before a byte of the body is read, the cheap header fields are checked
(version, sender, nonce, receiver, freshness: what ``http_auth.verify`` checks
before the signature) and the declared ``Content-Length`` against
``max_body_bytes``; the body is then read only up to that limit (413 past it).
A stranger's huge body is refused without being read, and these errors close
the connection, so its unread rest is not read either.

A request with ``Btsession-*`` headers is checked by the verifier's ``SessionTable``
instead (``btsession/1``, ``shared.sessions``: an HMAC under a key agreed over a
signed ``POST /session``, see ``handshake``), in the same two steps and with the same
401/403; a refusal the sender can recover from carries ``Btsession-Error``.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, AsyncIterator, Callable, Mapping, Optional

import orjson
from bittensor import http_auth
from bittensor.http_auth import AuthError, Caller, MalformedAuth, StaleRequest, WrongReceiver
from bittensor.signing import resolve_signer
from bittensor.wallets import CRYPTO_TYPE_NAMES
from fastapi import HTTPException, Request

from .sessions import HEADER_ERROR as SESSION_ERROR_HEADER
from .sessions import SessionTable, SessionUnknown, is_session_request


class Signer:
    """Signs requests with a hotkey loaded once.

    Nonces are wall-clock nanoseconds with random low digits and a
    per-process guard (monotonic within the process), so that several processes signing with the same hotkey
    (the validator and its API workers) never hand a receiver the same nonce.
    """

    def __init__(self, keypair: Any):
        self.keypair = keypair
        self.hotkey: str = keypair.ss58_address
        self._last_nonce = 0
        self._lock = threading.Lock()
        # ``http_auth.sign`` resolves its signer on every call (a runtime Protocol check: a tenth of its
        # cost); resolved once here, each request only builds the SDK's payload and signs it.
        self._signer = resolve_signer(keypair, role="hotkey")
        self._scheme = CRYPTO_TYPE_NAMES.get(self._signer.crypto_type)
        if self._scheme is None:
            raise ValueError(f"cannot sign btauth requests with crypto type {self._signer.crypto_type}")

    def _next_nonce(self) -> int:
        # ``random`` (seeded from the OS, reseeded in a forked child) rather than ``secrets``: the low digits
        # only keep processes that share a hotkey apart, they guard nothing, and ``secrets`` costs a
        # ``getrandom`` system call per signature.
        candidate = time.time_ns() // 1000 * 1000 + random.randrange(1000)
        with self._lock:
            if candidate <= self._last_nonce:
                candidate = self._last_nonce + 1
            self._last_nonce = candidate
        return candidate

    def headers(self, method: str, path: str, body: bytes = b"", *, receiver: str) -> dict[str, str]:
        """The same headers as ``http_auth.sign`` (tests pin them byte for byte)."""
        nonce = self._next_nonce()
        payload = http_auth.build_payload(scheme=self._scheme, method=method, path=path, body=body, nonce_ns=nonce,
                                          sender_ss58=self.hotkey, receiver_ss58=receiver)
        headers = {
            http_auth.HEADER_VERSION: http_auth.VERSION,
            http_auth.HEADER_HOTKEY: self.hotkey,
            http_auth.HEADER_NONCE: str(nonce),
            http_auth.HEADER_SIGNATURE: "0x" + bytes(self._signer.sign(payload)).hex(),
        }
        if self._scheme != "sr25519":
            headers[http_auth.HEADER_CRYPTO] = self._scheme
        headers[http_auth.HEADER_RECEIVER] = receiver
        return headers


def request_target(request: Request) -> str:
    """The path and query exactly as sent: what the sender signed (not the decoded path)."""
    return scope_target(request.scope)


def scope_target(scope: Mapping[str, Any]) -> str:
    """:func:`request_target` for a bare ASGI scope."""
    target = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    if query:
        target += b"?" + query
    return target.decode("latin-1")


CLOSE = {"Connection": "close"}  # on errors found before the body was read: its rest is never read


def unauthorized(exc: AuthError, *, close: bool = False) -> HTTPException:
    """401 for an ``AuthError``; a session error that the sender can recover from says so in ``Btsession-Error``."""
    headers = dict(CLOSE) if close else {}
    marker = getattr(exc, "marker", None)
    if marker is not None:
        headers[SESSION_ERROR_HEADER] = marker
    return HTTPException(401, f"{type(exc).__name__}: {exc}", headers=headers or None)
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


def check_auth_headers(headers: Mapping[str, str], self_hotkey: str, *, now_ns: Optional[int] = None) -> None:
    """What ``http_auth.verify`` checks before the signature, on the headers alone: ``AuthError`` if they fail.

    Header names may be in any case. The full ``verify`` repeats these checks; this
    one runs first so that a request that cannot pass is refused before its body is read.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    # The SDK's order and messages, so that a request refused here reads as it would after the body.
    if lowered.get(http_auth.HEADER_VERSION.lower()) != http_auth.VERSION:
        raise MalformedAuth(f"missing or unsupported {http_auth.HEADER_VERSION} (expected {http_auth.VERSION!r})")
    if not lowered.get(http_auth.HEADER_HOTKEY.lower()):
        raise MalformedAuth(f"missing {http_auth.HEADER_HOTKEY}")
    raw_nonce = lowered.get(http_auth.HEADER_NONCE.lower())
    if raw_nonce is None:
        raise MalformedAuth(f"missing {http_auth.HEADER_NONCE}")
    try:
        nonce = int(raw_nonce)
    except ValueError:
        raise MalformedAuth(f"{http_auth.HEADER_NONCE} is not a decimal integer") from None
    if lowered.get(http_auth.HEADER_SIGNATURE.lower()) is None:
        raise MalformedAuth(f"missing {http_auth.HEADER_SIGNATURE}")
    receiver = lowered.get(http_auth.HEADER_RECEIVER.lower())
    if receiver is None:
        raise WrongReceiver(f"missing {http_auth.HEADER_RECEIVER}: this server requires receiver-bound requests")
    if receiver != self_hotkey:
        raise WrongReceiver("request was signed for a different receiving hotkey")
    now = time.time_ns() if now_ns is None else now_ns
    if now - nonce > http_auth.DEFAULT_MAX_AGE * 1e9:
        raise StaleRequest(f"nonce is older than the {http_auth.DEFAULT_MAX_AGE:g}s freshness window")
    if nonce - now > http_auth.DEFAULT_ALLOWED_SKEW * 1e9:
        raise StaleRequest(f"nonce is more than {http_auth.DEFAULT_ALLOWED_SKEW:g}s in the future")


def declared_length(headers: Mapping[str, str], max_bytes: int) -> Optional[int]:
    """The declared ``Content-Length`` (None: chunked or absent); ``HTTPException`` 413 past ``max_bytes``."""
    raw = headers.get("content-length")
    if raw is None:
        return None
    try:
        length = int(raw)
    except ValueError:
        raise HTTPException(400, "Content-Length is not an integer", headers=CLOSE) from None
    if length > max_bytes:
        raise HTTPException(413, f"request body is larger than {max_bytes} bytes", headers=CLOSE)
    return length


async def read_at_most(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The body from its chunks, or ``HTTPException`` 413 as soon as it passes ``max_bytes``."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"request body is larger than {max_bytes} bytes", headers=CLOSE)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class RequestVerifier:
    """FastAPI dependency: verify a ``btauth/1`` request, then ask who may call.

    ``verify`` is the same check without a framework, for a plain ASGI endpoint
    (which calls ``check_headers`` before it reads the body).
    """

    def __init__(self, self_hotkey: str, nonce_store: Any, is_allowed: Callable[[str], bool], *, why_forbidden: str,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, sessions: Optional[SessionTable] = None):
        self.self_hotkey = self_hotkey
        self.nonce_store = nonce_store
        self.is_allowed = is_allowed
        self.why_forbidden = why_forbidden
        self.max_body_bytes = max_body_bytes
        self.sessions = sessions  # btsession/1 (shared.sessions): None when this server does not offer it
        self.signature_checks = 0  # requests whose signature verified (sr25519), since start
        self.session_checks = 0  # requests whose session MAC verified

    async def __call__(self, request: Request) -> Caller:
        headers = request.headers
        self.check_headers(headers)
        declared_length(headers, self.max_body_bytes)
        body = await read_at_most(request.stream(), self.max_body_bytes)
        request._body = body  # what ``request.body()`` returns to the route from now on (Starlette's cache)
        return self.verify(request.method, request_target(request), headers, body)

    def check_headers(self, headers: Mapping[str, str]) -> None:
        """``HTTPException`` 401 if the headers alone show the request cannot pass (see :func:`check_auth_headers`)."""
        try:
            if is_session_request(headers):
                self._session_table().check_headers(headers)
            else:
                self.precheck(headers)
        except AuthError as exc:
            raise unauthorized(exc, close=True) from None

    def verify(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Caller:
        """The caller, or ``HTTPException`` 401 (bad signature or MAC) or 403 (not allowed to call)."""
        try:
            if is_session_request(headers):
                caller = self._session_table().authenticate(method, target, headers, body)
                self.session_checks += 1
            else:
                caller = self.authenticate(method, target, headers, body)
                self.signature_checks += 1
        except AuthError as exc:
            raise unauthorized(exc) from None
        if not self.is_allowed(caller.hotkey_ss58):  # every request: permits and allow-lists change
            raise HTTPException(403, self.why_forbidden)
        return caller

    def counts(self) -> dict:
        """What a signed ``GET /session`` answers: how this process checked its requests since it started."""
        sessions = self.sessions
        return {"offered": sessions is not None, "sessions": len(sessions) if sessions is not None else 0,
                "handshakes": sessions.handshakes if sessions is not None else 0,
                "signature_checks": self.signature_checks, "session_checks": self.session_checks}

    def _session_table(self) -> SessionTable:
        if self.sessions is None:
            raise SessionUnknown("this receiver does not offer sessions: sign the request")
        return self.sessions

    async def handshake(self, request: Request) -> dict:
        """``POST /session``: a signed request (never a session one) with the sender's X25519 key → a new session.

        The signature, receiver, freshness, replay and access checks are those of every signed route.
        """
        if self.sessions is None:
            raise HTTPException(404, "this receiver does not offer sessions")
        if is_session_request(request.headers):
            raise HTTPException(401, "MalformedAuth: a session handshake must be signed, not MAC'd", headers=CLOSE)
        caller = await self(request)
        try:
            public_key = bytes.fromhex(orjson.loads(request._body)["public_key"])
            return self.sessions.accept_handshake(caller, public_key)
        except (ValueError, KeyError, TypeError):
            raise HTTPException(422, 'the body must be {"public_key": hex of a 32-byte X25519 public key}') from None

    # The protocol: a subclass that speaks another one overrides these two (``shared.epistula``).

    def precheck(self, headers: Mapping[str, str]) -> None:
        """``AuthError`` if the headers alone show the request cannot pass."""
        check_auth_headers(headers, self.self_hotkey)

    def authenticate(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Caller:
        """The signer of a valid ``btauth/1`` request, or ``AuthError``."""
        return http_auth.verify(headers, body, method=method, path=target, self_hotkey_ss58=self.self_hotkey,
                                nonce_store=self.nonce_store)

__all__ = ["AuthError", "Caller", "RequestVerifier", "Signer", "check_auth_headers", "declared_length",
           "read_at_most", "request_target", "scope_target"]

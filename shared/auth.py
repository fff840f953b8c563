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
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Callable, Mapping

from bittensor import http_auth
from bittensor.http_auth import AuthError, Caller
from bittensor.signing import resolve_signer
from bittensor.wallets import CRYPTO_TYPE_NAMES
from fastapi import HTTPException, Request


class Signer:
    """Signs requests with a hotkey loaded once.

    Nonces are wall-clock nanoseconds with random low digits and a
    per-process guard, so that several processes signing with the same hotkey
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
        candidate = time.time_ns() // 1000 * 1000 + secrets.randbelow(1000)
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


class RequestVerifier:
    """FastAPI dependency: verify a ``btauth/1`` request, then ask who may call.

    ``verify`` is the same check without a framework, for a plain ASGI endpoint.
    """

    def __init__(self, self_hotkey: str, nonce_store: Any, is_allowed: Callable[[str], bool], *, why_forbidden: str):
        self.self_hotkey = self_hotkey
        self.nonce_store = nonce_store
        self.is_allowed = is_allowed
        self.why_forbidden = why_forbidden

    async def __call__(self, request: Request) -> Caller:
        return self.verify(request.method, request_target(request), request.headers, await request.body())

    def verify(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Caller:
        """The caller, or ``HTTPException`` 401 (bad signature) or 403 (not allowed to call)."""
        try:
            caller = http_auth.verify(
                headers,
                body,
                method=method,
                path=target,
                self_hotkey_ss58=self.self_hotkey,
                nonce_store=self.nonce_store,
            )
        except AuthError as exc:
            raise HTTPException(401, f"{type(exc).__name__}: {exc}") from None
        if not self.is_allowed(caller.hotkey_ss58):
            raise HTTPException(403, self.why_forbidden)
        return caller


__all__ = ["AuthError", "Caller", "RequestVerifier", "Signer", "request_target", "scope_target"]

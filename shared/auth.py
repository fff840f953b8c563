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
from typing import Any, Callable

from bittensor import http_auth
from bittensor.http_auth import AuthError, Caller
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

    def _next_nonce(self) -> int:
        candidate = time.time_ns() // 1000 * 1000 + secrets.randbelow(1000)
        with self._lock:
            if candidate <= self._last_nonce:
                candidate = self._last_nonce + 1
            self._last_nonce = candidate
        return candidate

    def headers(self, method: str, path: str, body: bytes = b"", *, receiver: str) -> dict[str, str]:
        return http_auth.sign(
            self.keypair, method=method, path=path, body=body, receiver_ss58=receiver, nonce_ns=self._next_nonce()
        )


def request_target(request: Request) -> str:
    """The path and query exactly as sent: what the sender signed (not the decoded path)."""
    target = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    query = request.scope.get("query_string", b"")
    if query:
        target += "?" + query.decode("latin-1")
    return target


class RequestVerifier:
    """FastAPI dependency: verify a ``btauth/1`` request, then ask who may call."""

    def __init__(self, self_hotkey: str, nonce_store: Any, is_allowed: Callable[[str], bool], *, why_forbidden: str):
        self.self_hotkey = self_hotkey
        self.nonce_store = nonce_store
        self.is_allowed = is_allowed
        self.why_forbidden = why_forbidden

    async def __call__(self, request: Request) -> Caller:
        body = await request.body()
        try:
            caller = http_auth.verify(
                request.headers,
                body,
                method=request.method,
                path=request_target(request),
                self_hotkey_ss58=self.self_hotkey,
                nonce_store=self.nonce_store,
            )
        except AuthError as exc:
            raise HTTPException(401, f"{type(exc).__name__}: {exc}") from None
        if not self.is_allowed(caller.hotkey_ss58):
            raise HTTPException(403, self.why_forbidden)
        return caller


__all__ = ["AuthError", "Caller", "RequestVerifier", "Signer", "request_target"]

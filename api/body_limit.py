"""Request bodies, bounded on every route before anyone is authenticated.

    limits = BodyLimits.from_settings(settings)
    gate = await limits.gate(app, scope, receive, send)   # None: answered already (413)
    receive, send = gate                                  # the body, read and bounded, is replayed

In order, for a request that has a body:

1. its route's limit (``MAX_BODY_CHAT`` for chat-shaped routes, ``MAX_BODY_CONVERSATION``
   for a new conversation, ``MAX_BODY_OTHER`` for the rest);
2. a declared ``Content-Length`` beyond it: 413 at once, not a byte read;
3. a route that needs a key, asked without one that the key cache knows (or, on
   ``/api_management``, without the admin key): the body is not read at all; the
   route sees an empty body and answers 401/403 (and counts the failure);
4. otherwise the body is read up to the limit and replayed; one byte more (chunked
   bodies declare no length) and it is 413.

A 413, or an answer given without reading the body, closes the connection
(``Connection: close``), so the rest of the body is never read either.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Optional

from starlette.types import Receive, Scope, Send

from .errors import error_response
from .keys import hash_key

KEYED_PREFIXES = ("/v1/", "/web_retrieval", "/miner_availabilities")
CHECKED_KEY = "checked_key"  # in the request's state: the record of the key this gate found valid
ADMIN_PREFIX = "/api_management"
CHAT_PATHS = ("/v1/chat/completions", "/v1/completions")


@dataclass(frozen=True)
class BodyLimits:
    chat: int
    conversation: int
    other: int

    @classmethod
    def from_settings(cls, settings: Any) -> "BodyLimits":
        return cls(settings.max_body_chat, settings.max_body_conversation, settings.max_body_other)

    def limit_for(self, path: str) -> int:
        if path in CHAT_PATHS or (path.startswith("/v1/conversations/") and path.endswith("/chat")):
            return self.chat
        if path == "/v1/conversations":
            return self.conversation
        return self.other

    async def gate(self, app: Any, scope: Scope, receive: Receive, send: Send) -> Optional[tuple[Receive, Send]]:
        declared = declared_length(scope)
        if declared == 0:
            return receive, send  # no body (most GETs): nothing to bound
        limit = self.limit_for(scope["path"])
        if declared is not None and declared > limit:
            await too_large(limit)(scope, receive, closing(send))
            return None
        if not await credentials_known(app, scope):
            return replay([], receive), closing(send)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return replay([], receive, gone=True), send
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await too_large(limit)(scope, receive, closing(send))
                return None
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return replay(chunks, receive), send


def declared_length(scope: Scope) -> Optional[int]:
    """The declared Content-Length; None when the body is chunked (no length given)."""
    length: Optional[int] = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None  # the server refuses such a request before us; read it bounded all the same
        elif name == b"transfer-encoding":
            chunked = True
    if length is None:
        return None if chunked else 0
    return length


def too_large(limit: int):
    return error_response(413, f"request body larger than {limit} bytes", "request_too_large")


def closing(send: Send) -> Send:
    """``send`` with ``Connection: close`` on the response: what is left of the body is never read."""

    async def send_and_close(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    return send_and_close


def replay(chunks: list[bytes], receive: Receive, gone: bool = False) -> Receive:
    """A ``receive`` that gives the body read so far as one message, then what the server gives."""
    pending: list[dict] = [{"type": "http.disconnect"} if gone else
                           {"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def replayed() -> dict:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


def header(scope: Scope, wanted: bytes) -> Optional[str]:
    for name, value in scope["headers"]:
        if name == wanted:
            return value.decode("latin-1")
    return None


def presented_key(scope: Scope) -> Optional[str]:
    key = header(scope, b"api-key")
    if key and key.strip():
        return key.strip()
    scheme, _, value = (header(scope, b"authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def credentials_known(app: Any, scope: Scope) -> bool:
    """Whether the request's credentials are worth reading its body for (routes without a key: always)."""
    path = scope["path"]
    gateway = app.state.gateway
    if path.startswith(ADMIN_PREFIX):
        expected: bytes = gateway.admin_key_digest
        given = header(scope, b"admin-key") or ""
        return bool(expected and given) and hmac.compare_digest(hashlib.sha256(given.encode()).digest(), expected)
    if not path.startswith(KEYED_PREFIXES):
        return True
    key = presented_key(scope)
    if key is None:
        return False
    throttle = gateway.throttle
    if throttle is not None and throttle.refused_here("api", throttle.address(scope)) is not None:
        return False
    record = await gateway.keys.get(hash_key(key))
    if record is None or not record.enabled or record.expired(time.time()):
        return False
    scope.setdefault("state", {})[CHECKED_KEY] = record  # admission takes it from here (api.auth.authenticate)
    return True

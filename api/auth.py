"""Who is calling: API keys for the public routes, the admin key for ``/api_management``.

Clients send ``Authorization: Bearer <key>`` (what the ``openai`` SDK sends)
or ``api-key: <key>`` (what the subnet's docs show). Keys are looked up by
their sha256 through the worker's short-lived cache (see ``keys.KeyCache``).
The admin key is compared as a sha256 digest with ``hmac.compare_digest``:
constant time, and the plain key is never kept in memory after start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime, timezone
from typing import Optional

from fastapi import Request

from .body_limit import CHECKED_KEY
from .errors import ApiError
from .gateway import gateway_of
from .keys import KeyRecord, hash_key


def presented_key(request: Request) -> Optional[str]:
    key = request.headers.get("api-key")
    if key:
        return key.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def authenticate(request: Request) -> KeyRecord:
    """The caller's key record, or 401: missing, unknown, disabled or expired (429 when its address has
    failed too often, see ``api.throttle``).

    A key that the body gate (``api.body_limit``) found valid for this request, an instant ago, through the same
    cache and the same throttle check, is taken as it found it: the headers are not parsed nor the key hashed
    and looked up twice."""
    checked = request.scope.get("state", {}).get(CHECKED_KEY)
    if checked is not None:
        return checked
    throttle = gateway_of(request).throttle
    address = throttle.address(request.scope) if throttle is not None else ""
    if throttle is not None:
        throttle.raise_if_refused_here("api", address)
    key = presented_key(request)
    if key is None:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>' or an 'api-key' header",
                       "missing_api_key")
    record = await gateway_of(request).keys.get(hash_key(key))
    failure: Optional[ApiError] = None
    if record is None:
        failure = ApiError(401, "invalid API key", "invalid_api_key")
    elif not record.enabled:
        failure = ApiError(401, "this API key is disabled", "disabled_api_key")
    elif record.expired(time.time()):
        when = datetime.fromtimestamp(record.expires_at, timezone.utc).isoformat(timespec="seconds")
        failure = ApiError(401, f"this API key expired at {when}", "expired_api_key")
    if failure is not None:
        if throttle is not None:
            await throttle.failed("api", address)
        raise failure
    return record


async def require_admin(request: Request) -> None:
    throttle = gateway_of(request).throttle
    address = throttle.address(request.scope) if throttle is not None else ""
    if throttle is not None:
        await throttle.check("admin", address)
    expected: bytes = gateway_of(request).admin_key_digest
    if "admin-key" not in request.headers:  # the subnet's API answers 422 here (a required header is missing)
        raise ApiError(422, "missing header: admin-key", "missing_admin_key",
                       detail=[{"type": "missing", "loc": ["header", "admin-key"], "msg": "Field required",
                                "input": None}])
    given = request.headers.get("admin-key", "")
    digest = hashlib.sha256(given.encode()).digest()
    if not expected or not given or not hmac.compare_digest(digest, expected):
        if throttle is not None:
            await throttle.failed("admin", address)
        raise ApiError(403, "Invalid admin key", "invalid_admin_key")

"""What a key holder may ask about their own key: ``GET /v1/credits`` and ``GET /v1/usage``.

Authenticated like every public route, but free: they cost no credit and do
not count against the rate limit (their answers carry the X-RateLimit-*
headers all the same). Counters are read from the store, not the worker's
cache, so they are current; usage lags the last requests by at most the
recorder's flush interval.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..access import identify
from ..errors import ApiError
from ..gateway import gateway_of
from ..key_admin import credits_view, quota_view
from ..keys import KeyRecord
from ..token_budget import token_budget_view

router = APIRouter(prefix="/v1", tags=["account"])


async def current(request: Request, key: KeyRecord) -> KeyRecord:
    record = await gateway_of(request).store.key_by_id(key.id)
    if record is None:  # deleted since the cache read it
        raise ApiError(401, "invalid API key", "invalid_api_key")
    return record


@router.get("/credits")
async def credits(request: Request, key: KeyRecord = Depends(identify)) -> dict:
    return credits_view(await current(request, key))


@router.get("/usage")
async def usage(request: Request, key: KeyRecord = Depends(identify)) -> dict:
    record = await current(request, key)
    windows = list(record.rate_limits) or gateway_of(request).default_windows
    decision = await gateway_of(request).limiter.peek(record.id, windows) if windows else None
    return {**quota_view(record, decision), "token_budget": await token_budget_view(gateway_of(request), record)}

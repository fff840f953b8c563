"""``/api_management/usage`` and ``/api_management/logs``: what keys used, and every request (header ``admin-key``).

Times (``since``, ``until``) are ISO 8601 or Unix seconds; ``key`` is a key id
or the key itself. Logs are newest first, each with the miners it queried;
``uid`` or ``hotkey`` keep the requests that queried that miner.
"""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Query, Request

from ..auth import require_admin
from ..errors import ApiError
from ..gateway import gateway_of
from ..key_admin import log_view, usage_report
from ..key_fields import parse_time

MAX_UID = 65535  # a subnet's uids are 16-bit on chain: a larger one is a 422, not a store's overflow

router = APIRouter(prefix="/api_management", dependencies=[Depends(require_admin)], tags=["api management"])


def read_time(name: str, value: Optional[str]) -> Optional[float]:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise ApiError(422, f"{name}: {exc}", "invalid_request") from None


async def key_id_of(request: Request, ref: Optional[str]) -> Optional[str]:
    if ref is None:
        return None
    record = await gateway_of(request).key_admin.find(ref)
    if record is None:
        raise ApiError(404, "API key not found", "api_key_not_found")
    return record.id


@router.get("/usage")
async def usage(request: Request, key: Optional[str] = None, since: Optional[str] = None,
                until: Optional[str] = None) -> dict:
    """Totals per key (all time) and per day (UTC) in the period."""
    key_id = await key_id_of(request, key)
    store = gateway_of(request).store
    record = await store.key_by_id(key_id) if key_id else None
    return await usage_report(store, record, read_time("since", since), read_time("until", until))


@router.get("/logs")
async def logs(request: Request, key: Optional[str] = None, since: Optional[str] = None,
               until: Optional[str] = None, uid: Optional[int] = Query(None, ge=0, le=MAX_UID),
               hotkey: Optional[str] = None, status: Optional[int] = Query(None, ge=100, le=599),
               limit: int = Query(100, ge=1, le=10_000)) -> dict:
    found = await gateway_of(request).store.query_logs(
        key_id=await key_id_of(request, key), since=read_time("since", since), until=read_time("until", until),
        uid=uid, hotkey=hotkey, status=status, limit=limit)
    return {"logs": [log_view(log) for log in found], "count": len(found)}

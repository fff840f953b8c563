"""The dashboard's request logs: filter by key, time, status and miner; open one to see every miner queried.

Reads ``store.query_logs`` and shapes rows with ``log_view``, as
``/api_management/logs`` and the CLI do. ``status`` is a code (``429``) or a
class (``5xx``); ``until`` pages back in time (pass the oldest row's time).
"""

from __future__ import annotations

import re
from typing import Optional

from fastapi import APIRouter, Depends, Query, Request

from ..errors import ApiError
from ..gateway import gateway_of
from ..key_admin import log_view
from ..routers.admin_logs import MAX_UID, key_id_of, read_time
from .session import require_session

STATUS = re.compile(r"^([1-5])(?:xx|\d\d)$", re.IGNORECASE)

router = APIRouter(prefix="/dashboard/api/logs", dependencies=[Depends(require_session)], include_in_schema=False)


def read_status(value: Optional[str]) -> dict:
    if not value:
        return {}
    value = value.strip()
    match = STATUS.match(value)
    if not match:
        raise ApiError(422, "status: a code such as 429, or a class such as 5xx", "invalid_request")
    if value[1:].lower() == "xx":
        low = int(match.group(1)) * 100
        return {"status_range": (low, low + 99)}
    return {"status": int(value)}


@router.get("")
async def logs(request: Request, key: Optional[str] = None, since: Optional[str] = None,
               until: Optional[str] = None, status: Optional[str] = None,
               uid: Optional[int] = Query(None, ge=0, le=MAX_UID),
               hotkey: Optional[str] = None, limit: int = Query(50, ge=1, le=1000)) -> dict:
    found = await gateway_of(request).store.query_logs(
        key_id=await key_id_of(request, key or None), since=read_time("since", since or None),
        until=read_time("until", until or None), uid=uid, hotkey=hotkey or None, limit=limit,
        **read_status(status))
    return {"logs": [log_view(log) for log in found], "count": len(found), "limit": limit}


@router.get("/{request_id}")
async def one_log(request_id: str, request: Request) -> dict:
    found = await gateway_of(request).store.query_logs(request_id=request_id, limit=1)
    if not found:
        raise ApiError(404, "no such request log (never recorded, or older than the retention)", "not_found")
    view = log_view(found[0])
    record = await gateway_of(request).store.key_by_id(found[0].key_id)
    view["key"] = {"id": found[0].key_id, "name": record.name if record else "(deleted)",
                   "key_hint": record.key_hint if record else None}
    return view

"""The dashboard's key pages: the same ``KeyAdmin`` as ``/api_management`` and the CLI, behind the session.

    GET    /dashboard/api/keys                  every key, masked, with its usage
    POST   /dashboard/api/keys                  {fields} → the key, shown this once
    PATCH  /dashboard/api/keys/{id}             {fields}: limits, credits, expiry, enabled, …
    DELETE /dashboard/api/keys/{id}
    GET    /dashboard/api/keys/{id}/usage       totals and per-day usage

Fields are ``KeySpec``'s, read by the admin API's own reader (same 422s).
Changes need the session's CSRF token.
"""

from __future__ import annotations

import time
from typing import Optional

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse

from ..errors import ApiError
from ..gateway import gateway_of
from ..key_admin import describe, usage_report
from ..routers.api_management import not_found, read_spec
from .session import require_csrf, require_session

router = APIRouter(prefix="/dashboard/api/keys", dependencies=[Depends(require_session)], include_in_schema=False)
NO_STORE = {"Cache-Control": "no-store"}


@router.get("")
async def list_keys(request: Request, limit: int = Query(1000, ge=1, le=10_000)) -> dict:
    keys = await gateway_of(request).key_admin.list(limit, 0)
    return {"keys": [describe(k) for k in keys], "count": len(keys)}


@router.post("", dependencies=[Depends(require_csrf)])
async def create_key(request: Request, body: Optional[dict] = Body(None)) -> JSONResponse:
    plain, record = await gateway_of(request).key_admin.create(read_spec(body))
    return JSONResponse({"message": "API key created", "api_key": plain, "id": record.id, "key": describe(record)},
                        headers=NO_STORE)


@router.patch("/{key_id}", dependencies=[Depends(require_csrf)])
async def modify_key(key_id: str, request: Request, body: Optional[dict] = Body(None)) -> dict:
    record = await gateway_of(request).key_admin.modify(key_id, read_spec(body))
    if record is None:
        raise not_found()
    return {"message": "API key modified", "key": describe(record)}


@router.delete("/{key_id}", dependencies=[Depends(require_csrf)])
async def delete_key(key_id: str, request: Request) -> dict:
    if not await gateway_of(request).key_admin.delete(key_id):
        raise not_found()
    return {"message": "API key deleted"}


@router.get("/{key_id}/usage")
async def key_usage(key_id: str, request: Request, days: int = Query(30, ge=1, le=366)) -> dict:
    record = await gateway_of(request).key_admin.find(key_id)
    if record is None:
        raise ApiError(404, "API key not found", "api_key_not_found")
    report = await usage_report(gateway_of(request).store, record, time.time() - days * 86400, None)
    return {"key": describe(record), "daily": report["daily"]}

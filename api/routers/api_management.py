"""``/api_management``: create, modify and delete API keys (header ``admin-key``).

Paths and answers follow the subnet's published API docs, so its admin
scripts work unchanged.
"""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Query, Request

from ..auth import require_admin
from ..errors import ApiError

router = APIRouter(prefix="/api_management", dependencies=[Depends(require_admin)], tags=["api management"])


@router.post("/create-api-key/")
async def create_api_key(request: Request, rate_limit: Optional[int] = Query(None, ge=1),
                         name: str = Query("", max_length=200)) -> dict:
    key = await request.app.state.keys.create(name=name, rate_limit=rate_limit)
    return {"message": "API key created", "api_key": key}


@router.put("/modify-api-key/{api_key}")
async def modify_api_key(api_key: str, request: Request, rate_limit: Optional[int] = Query(None, ge=1),
                         name: Optional[str] = Query(None, max_length=200),
                         enabled: Optional[bool] = Query(None)) -> dict:
    if not await request.app.state.keys.modify(api_key, rate_limit=rate_limit, name=name, enabled=enabled):
        raise ApiError(404, "API key not found", "api_key_not_found")
    return {"message": "API key modified"}


@router.delete("/delete-api-key/{api_key}")
async def delete_api_key(api_key: str, request: Request) -> dict:
    if not await request.app.state.keys.delete(api_key):
        raise ApiError(404, "API key not found", "api_key_not_found")
    return {"message": "API key deleted"}

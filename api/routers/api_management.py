"""``/api_management``: API keys for admins (header ``admin-key``).

The subnet's published paths and answers work unchanged
(``create-api-key/?rate_limit=N``, ``modify-api-key/{api_key}``,
``delete-api-key/{api_key}``; ``rate_limit`` is requests per minute). Every
field of ``KeySpec`` may also be given, as a query parameter or a JSON body
(query parameters win). ``{api_key}`` may be the key or its id (``key_…``):
the key itself is shown once, at creation, and the store keeps only its hash.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import ValidationError

from ..auth import require_admin
from ..errors import ApiError
from ..gateway import gateway_of
from ..key_admin import KeyAdmin, describe
from ..key_fields import KeySpec
from ..keys import LARGEST_COUNT

router = APIRouter(prefix="/api_management", dependencies=[Depends(require_admin)], tags=["api management"])


def not_found() -> ApiError:
    return ApiError(404, "API key not found", "api_key_not_found")


def read_spec(body: Optional[dict], **query: Any) -> KeySpec:
    """The JSON body's fields, then the query string's on top; a bad value is a 422 naming the field."""
    try:
        spec = KeySpec.model_validate(body or {})
        return spec.merged(KeySpec.model_validate({k: v for k, v in query.items() if v is not None}))
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        raise ApiError(422, f"invalid key fields: {detail}", "invalid_request") from None


def key_admin(request: Request) -> KeyAdmin:
    return gateway_of(request).key_admin


class SpecQuery:
    """The key fields as query parameters (documented in the OpenAPI schema)."""

    def __init__(
        self,
        rate_limit: Optional[int] = Query(None, ge=1, le=LARGEST_COUNT, description="requests per minute"),
        name: Optional[str] = Query(None, max_length=200),
        enabled: Optional[bool] = Query(None),
        rate_limits: Optional[str] = Query(None, description="e.g. '60 per minute and 1000 per day', or 'none'"),
        credits: Optional[str] = Query(None, description="requests the key may make, or 'unlimited'"),
        add_credits: Optional[int] = Query(None, ge=-LARGEST_COUNT, le=LARGEST_COUNT,
                                           description="top up (negative takes away)"),
        expires_at: Optional[str] = Query(None, description="ISO 8601 or Unix seconds, or 'never'"),
        expires_in: Optional[float] = Query(None, gt=0, le=3153600000, description="seconds from now"),
        allowed_tasks: Optional[str] = Query(None, description="comma-separated, or 'any'"),
        allowed_models: Optional[str] = Query(None, description="comma-separated ('default' included), or 'any'"),
        token_quota: Optional[str] = Query(None, description="tokens the key may use in all, or 'unlimited'"),
        tpm_limit: Optional[str] = Query(None, description="tokens per minute, or 'none'"),
    ):
        self.fields = dict(rate_limit=rate_limit, name=name, enabled=enabled, rate_limits=rate_limits,
                           credits=credits, add_credits=add_credits, expires_at=expires_at, expires_in=expires_in,
                           allowed_tasks=allowed_tasks, allowed_models=allowed_models, token_quota=token_quota,
                           tpm_limit=tpm_limit)


@router.post("/create-api-key/")
async def create_api_key(request: Request, query: SpecQuery = Depends(), body: Optional[dict] = Body(None)) -> dict:
    plain, record = await key_admin(request).create(read_spec(body, **query.fields))
    return {"message": "API key created", "api_key": plain, "id": record.id, "key": describe(record)}


@router.put("/modify-api-key/{api_key}")
async def modify_api_key(api_key: str, request: Request, query: SpecQuery = Depends(),
                         body: Optional[dict] = Body(None)) -> dict:
    record = await key_admin(request).modify(api_key, read_spec(body, **query.fields))
    if record is None:
        raise not_found()
    return {"message": "API key updated", "api_key": api_key, "key": describe(record)}


@router.delete("/delete-api-key/{api_key}")
async def delete_api_key(api_key: str, request: Request) -> dict:
    if not await key_admin(request).delete(api_key):
        raise not_found()
    return {"message": "API key deleted"}


@router.get("/keys")
async def list_keys(request: Request, limit: int = Query(100, ge=1, le=1000),
                    offset: int = Query(0, ge=0, le=LARGEST_COUNT)) -> dict:
    keys = await key_admin(request).list(limit, offset)
    return {"keys": [describe(k) for k in keys], "count": len(keys), "limit": limit, "offset": offset}


@router.get("/keys/{api_key}")
async def key_info(api_key: str, request: Request) -> dict:
    record = await key_admin(request).find(api_key)
    if record is None:
        raise not_found()
    return describe(record)

"""Health: ``GET /health`` (the subnet's, always 200), and probes for load balancers and orchestrators.

    GET /health/liveness    200 while the event loop runs; checks nothing else (restart me only if this fails)
    GET /health/readiness   200 or 503, with every check and why (see ``readiness``)

``/health/liveliness`` is LiteLLM's spelling of liveness, kept for operators
who already probe it.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..gateway import gateway_of
from ..readiness import readiness as check_readiness

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health(request: Request) -> dict:
    gateway = gateway_of(request)
    directory = gateway.directory.directory
    fetched_at = gateway.directory.fetched_at
    available = sum(1 for m in directory.miners if m.availability is not None) if directory else 0
    return {
        "status": "ok",
        "validator_reachable": gateway.directory.validator_reachable,
        "directory_block": directory.block if directory else None,
        "directory_age_seconds": round(time.time() - fetched_at, 1) if fetched_at else None,
        "available_miners": available,
        "scoring_buffer": len(gateway.forwarder.buffer),
        "scoring_forwarded": gateway.forwarder.sent,
        "scoring_dropped": gateway.forwarder.dropped,
        "scoring_over_budget": gateway.forwarder.over_budget,
    }


@router.get("/health/liveness")
@router.get("/health/liveliness", include_in_schema=False)
async def liveness() -> dict:
    return {"status": "alive"}


@router.get("/health/readiness")
async def readiness(request: Request) -> JSONResponse:
    ready, body = await check_readiness(gateway_of(request))
    return JSONResponse(body, status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})

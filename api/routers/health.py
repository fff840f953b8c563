"""``GET /health``: always answers while the process lives, and says what it knows."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict:
    state = request.app.state
    directory = state.directory.directory
    fetched_at = state.directory.fetched_at
    available = sum(1 for m in directory.miners if m.availability is not None) if directory else 0
    return {
        "status": "ok",
        "validator_reachable": state.directory.validator_reachable,
        "directory_block": directory.block if directory else None,
        "directory_age_seconds": round(time.time() - fetched_at, 1) if fetched_at else None,
        "available_miners": available,
        "scoring_buffer": len(state.forwarder.buffer),
        "scoring_forwarded": state.forwarder.sent,
        "scoring_dropped": state.forwarder.dropped,
    }

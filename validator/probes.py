"""Probes for the validator (unsigned, like ``/health``): liveness and readiness.

    GET /health/liveness    200 while the event loop runs; checks nothing else
    GET /health/readiness   200 or 503, every check and why

Required: a metagraph has been read and is not older than
``READY_MAX_METAGRAPH_AGE_SECONDS`` (0: any age), and the validator's SQLite
file answers. Reported, not required: the scoring queue's depth against its
bound, and how many miners answered the last availability poll.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .services import Services, services_of

CHECK_TIMEOUT = 2.0

router = APIRouter()


def metagraph_check(services: Services, max_age: float, now: float) -> dict:
    graph = services.metagraph
    if graph.state is None or graph.refreshed_at is None:
        return {"ok": False, "required": True, "failures": graph.failures, "error": "the metagraph has not been read"}
    age = round(now - graph.refreshed_at, 1)
    check = {"ok": True, "required": True, "block": graph.state.block, "neurons": len(graph.state.neurons),
             "age_seconds": age, "max_age_seconds": max_age or None, "failures": graph.failures}
    if max_age and age > max_age:
        check.update(ok=False, error=f"the last good metagraph read is {age:.0f} s old"
                                     f" (READY_MAX_METAGRAPH_AGE_SECONDS={max_age:g}); the chain is not answering")
    return check


async def database_check(services: Services) -> tuple[dict, int]:
    started = time.perf_counter()
    try:
        counters = await asyncio.wait_for(services.queue.counters(), CHECK_TIMEOUT)
    except Exception as exc:  # reported, whatever it is
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"[:300]
        return {"ok": False, "required": True, "error": reason}, -1
    return {"ok": True, "required": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}, \
        counters["pending"]


@router.get("/health/liveness")
async def liveness() -> dict:
    return {"status": "alive"}


@router.get("/health/readiness")
async def readiness(request: Request) -> JSONResponse:
    services = services_of(request)
    checks = {"metagraph": metagraph_check(services, services.settings.ready_max_metagraph_age_seconds, time.time())}
    checks["database"], pending = await database_check(services)
    full = pending >= services.queue.max_items
    checks["scoring_queue"] = {"ok": not full, "required": False, "pending": pending, "max": services.queue.max_items}
    if full:
        checks["scoring_queue"]["error"] = "full: the oldest items are being dropped"
    available = sum(1 for r in services.poller.records.values() if r.availability is not None)
    checks["miners"] = {"ok": available > 0, "required": False, "available": available}
    ready = all(c["ok"] for c in checks.values() if c["required"])
    reasons = [f"{name}: {c['error']}" for name, c in checks.items() if not c["ok"] and "error" in c]
    if not available:
        reasons.append("miners: none answered the last availability poll")
    return JSONResponse({"status": "ready" if ready else "not_ready", "reasons": reasons, "checks": checks},
                        status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})

"""Readiness of an API worker: can it serve traffic now? Every check says what it found.

Required (any failure answers 503, and the load balancer should stop sending
traffic here):
- ``store``: the database answers a query (keys, credits and logs live there);
- ``rate_limiter``: Redis answers, when the limits are counted there;
- ``directory``: a miner directory is loaded and not older than
  ``READY_MAX_DIRECTORY_AGE_SECONDS`` (0: any age).

Reported, never required: whether the validator answered the last directory
refresh (workers keep routing from their last good copy while it restarts,
so taking them all out of the balancer would turn a validator restart into
an outage) and how many miners are available.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

if TYPE_CHECKING:
    from .gateway import Gateway

CHECK_TIMEOUT = 2.0


async def timed(probe: Callable[[], Awaitable[Any]]) -> dict:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT)
    except Exception as exc:  # whatever went wrong, the probe reports it rather than failing
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"[:300]
        return {"ok": False, "required": True, "error": reason}
    return {"ok": True, "required": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def directory_check(gateway: Gateway, max_age: float, now: float) -> dict:
    directory = gateway.directory.directory
    if directory is None:
        return {"ok": False, "required": True, "error": "no miner directory yet: the validator has not answered"}
    fetched_at = gateway.directory.fetched_at or directory.generated_at
    age = round(now - fetched_at, 1)
    check = {"ok": True, "required": True, "block": directory.block, "age_seconds": age,
             "max_age_seconds": max_age or None, "saved_copy": gateway.directory.fetched_at is None}
    if max_age and age > max_age:
        check.update(ok=False, error=f"directory is {age:.0f} s old (READY_MAX_DIRECTORY_AGE_SECONDS={max_age:g})")
    return check


async def readiness(gateway: Gateway) -> tuple[bool, dict]:
    now = time.time()
    checks = {"store": await timed(gateway.store.ping)}
    ping = getattr(gateway.limiter, "ping", None)
    checks["rate_limiter"] = await timed(ping) if ping else {"ok": True, "required": True, "in": "store"}
    checks["directory"] = directory_check(gateway, gateway.settings.ready_max_directory_age_seconds, now)
    reachable = gateway.directory.validator_reachable
    checks["validator"] = {"ok": reachable, "required": False, "url": gateway.directory.validator_url}
    if not reachable:
        checks["validator"]["error"] = "the last directory refresh failed; routing from the last good copy"
    directory = gateway.directory.directory
    available = sum(1 for m in directory.miners if m.availability is not None) if directory else 0
    checks["miners"] = {"ok": available > 0, "required": False, "available": available}
    ready = all(c["ok"] for c in checks.values() if c["required"])
    reasons = [f"{name}: {c['error']}" for name, c in checks.items() if not c["ok"] and "error" in c]
    if not available:
        reasons.append("miners: none available")
    return ready, {"status": "ready" if ready else "not_ready", "reasons": reasons, "checks": checks}

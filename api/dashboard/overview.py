"""``GET /dashboard/api/overview``: traffic over the last hour or day, from the store's per-minute roll-ups.

Every number covers what every worker on every host served (the roll-ups are
written with the request logs), for requests made with a key. Success rate
counts what the gateway or its miners could have got right: requests refused
for the client's own reasons (4xx: bad key, limits, credits, a bad body) are
shown apart and left out of it.

``routing`` (overview of all keys only): the share of answers clients got per
validator-score band of the serving miner, and their mean validator score,
from the Prometheus counters of this port's workers since they started
(docs/routing.md).
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal, Optional

from fastapi import APIRouter, Depends, Request

from ..errors import ApiError
from ..gateway import gateway_of
from ..store.rollups import USAGE_COUNTERS, quantile
from .session import require_session

RANGES = {"hour": (3600, 60), "day": (86400, 900)}  # span, slot (seconds)
RECENT_SECONDS = 300  # "requests per minute now": the last five minutes

router = APIRouter(prefix="/dashboard/api", dependencies=[Depends(require_session)], include_in_schema=False)


def summarise(counters: dict, histogram: dict[int, int], seconds: float) -> dict:
    requests = counters["requests"]
    served = requests - counters["rejected"]
    good = counters["ok"] + counters["client_closed"]
    return {
        **{c: counters[c] for c in USAGE_COUNTERS if c != "latency_ms_sum"},
        "tokens": counters["prompt_tokens"] + counters["completion_tokens"],
        "requests_per_minute": round(requests * 60 / seconds, 3),
        "success_rate": round(good / served, 4) if served else None,
        "mean_latency_ms": round(counters["latency_ms_sum"] / requests, 1) if requests else None,
        "p50_ms": _round(quantile(histogram, 0.50)),
        "p99_ms": _round(quantile(histogram, 0.99)),
    }


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 1)


def add(into: dict, counters: dict) -> None:
    for column, value in counters.items():
        into[column] += value


def merge(into: dict[int, int], histogram: dict[int, int]) -> None:
    for bucket, count in histogram.items():
        into[bucket] = into.get(bucket, 0) + count


async def traffic(store, range_name: str, key_id: Optional[str] = None, now: Optional[float] = None) -> dict:
    """Slots over the range (zeros where nothing happened), totals, and the busiest keys."""
    span, step = RANGES[range_name]
    now = time.time() if now is None else now
    end = (now // step + 1) * step
    start = end - span
    usage = await store.rollups.usage(start, end, key_id)
    latency = await store.rollups.latency(start, end) if key_id is None else {}
    total, total_histogram, series = dict.fromkeys(USAGE_COUNTERS, 0), {}, []
    for slot in range(int(start), int(end), step):
        counters, histogram = dict.fromkeys(USAGE_COUNTERS, 0), {}
        for minute in range(slot // 60, (slot + step) // 60):
            if minute in usage:
                add(counters, usage[minute])
            if minute in latency:
                merge(histogram, latency[minute])
        add(total, counters)
        merge(total_histogram, histogram)
        series.append({"t": slot, **summarise(counters, histogram, step)})
    top = []
    if key_id is None:
        for row in await store.rollups.top_keys(start, end):
            record = await store.key_by_id(row["key_id"])
            top.append({**row, "name": record.name if record else "(deleted)",
                        "key_hint": record.key_hint if record else None})
    first_recent = int((now - RECENT_SECONDS) // 60)
    recent = sum(usage[m]["requests"] for m in range(first_recent, int(now // 60) + 1) if m in usage)
    totals = summarise(total, total_histogram, now - start)
    totals["recent_requests_per_minute"] = round(recent * 60 / (now - first_recent * 60), 3)
    return {"range": range_name, "since": start, "until": end, "slot_seconds": step, "now": now,
            "series": series, "totals": totals, "recent_seconds": RECENT_SECONDS, "top_keys": top}


@router.get("/overview")
async def overview(request: Request, range: Literal["hour", "day"] = "hour", key: Optional[str] = None) -> dict:
    key_id = None
    if key is not None:
        record = await gateway_of(request).key_admin.find(key)
        if record is None:
            raise ApiError(404, "API key not found", "api_key_not_found")
        key_id = record.id
    result = await traffic(gateway_of(request).store, range, key_id)
    if key_id is None:  # which miners' answers clients got (this port's workers, since they started)
        metrics = gateway_of(request).metrics
        metrics.fold()
        result["routing"] = await asyncio.to_thread(metrics.routing_summary)
    return result

"""``GET /dashboard/api/miners``: who serves, how they did lately, and how the validator rates them.

Three sources, each said for what it is:
- the directory this worker routes by (from the validator; the last good copy
  when it is down): uid, hotkey, address, incentive, stake, availability;
- the store's per-minute roll-ups of the miners our requests queried, for
  success rate and latency over the last ``window`` seconds (every worker);
- the validator's signed ``GET /scores`` (moving-average score, weight,
  rewards, the last weight set), fetched now: when the validator does not
  answer, the page says "validator unreachable" and shows the rest.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

from fastapi import APIRouter, Depends, Query, Request

from shared.signed_http import SignedCallError

from ..gateway import gateway_of
from .session import require_session

if TYPE_CHECKING:
    from ..gateway import Gateway

SCORES_TIMEOUT = 3.0

router = APIRouter(prefix="/dashboard/api", dependencies=[Depends(require_session)], include_in_schema=False)


async def validator_scores(gateway: Gateway) -> tuple[Optional[dict], Optional[str]]:
    directory = gateway.directory
    try:
        return await gateway.client.get_json(directory.validator_url, "/scores", receiver=directory.validator_hotkey,
                                             timeout=SCORES_TIMEOUT), None
    except SignedCallError as exc:
        return None, str(exc)


def recent_by_miner(rows: list[dict]) -> dict[tuple[int, str], dict]:
    found: dict[tuple[int, str], dict] = {}
    for row in rows:
        entry = found.setdefault((row["uid"], row["hotkey"]), {
            "calls": 0, "ok": 0, "errors": 0, "timeouts": 0, "wins": 0, "latency_ms_sum": 0.0, "latency_n": 0,
            "first_chunk_ms_sum": 0.0, "first_chunk_n": 0})
        entry["calls"] += row["calls"]
        entry["wins"] += row["wins"]
        outcome = {"ok": "ok", "timeout": "timeouts"}.get(row["outcome"], "errors" if row["outcome"] != "cancelled"
                                                          else None)
        if outcome:
            entry[outcome] += row["calls"]
        for column in ("latency_ms_sum", "latency_n", "first_chunk_ms_sum", "first_chunk_n"):
            entry[column] += row[column]
    return found


def recent_view(entry: Optional[dict]) -> dict:
    if not entry:
        return {"calls": 0, "ok": 0, "errors": 0, "timeouts": 0, "wins": 0, "success_rate": None,
                "mean_latency_ms": None, "mean_first_chunk_ms": None}
    judged = entry["ok"] + entry["errors"] + entry["timeouts"]  # cancelled calls (the race was won) say nothing
    return {
        "calls": entry["calls"], "ok": entry["ok"], "errors": entry["errors"], "timeouts": entry["timeouts"],
        "wins": entry["wins"], "success_rate": round(entry["ok"] / judged, 4) if judged else None,
        "mean_latency_ms": round(entry["latency_ms_sum"] / entry["latency_n"], 1) if entry["latency_n"] else None,
        "mean_first_chunk_ms": (round(entry["first_chunk_ms_sum"] / entry["first_chunk_n"], 1)
                                if entry["first_chunk_n"] else None),
    }


@router.get("/miners")
async def miners(request: Request, window: int = Query(3600, ge=60, le=86400)) -> dict:
    gateway = gateway_of(request)
    now = time.time()
    directory = gateway.directory.directory
    recent = recent_by_miner(await gateway.store.rollups.miners(now - window, now + 60))
    scores, error = await validator_scores(gateway)
    by_uid = {row["uid"]: row for row in (scores or {}).get("scores", [])}
    rows = []
    for miner in directory.miners if directory else []:
        score = by_uid.get(miner.uid)
        if score is not None and score.get("hotkey") != miner.hotkey:
            score = None  # the uid changed hands: the score was the previous hotkey's
        availability = miner.availability
        rows.append({
            "uid": miner.uid, "hotkey": miner.hotkey, "address": miner.address, "incentive": miner.incentive,
            "stake": miner.stake, "validator_permit": miner.validator_permit,
            "available": availability is not None,
            "tasks": sorted(t for t, ok in availability.task_availabilities.items() if ok) if availability else [],
            "models": sorted(m for m, ok in availability.llm_model_availabilities.items() if ok) if availability
            else [],
            "checked_at": miner.checked_at,
            "recent": recent_view(recent.get((miner.uid, miner.hotkey))),
            "score": score.get("score") if score else None, "weight": score.get("weight") if score else None,
            "rewards": score.get("rewards") if score else None,
            "last_reward": score.get("last_reward") if score else None,
            "probation_until": score.get("probation_until") if score else None,  # caught cheating: held at 0 until
        })
    fetched_at = gateway.directory.fetched_at or (directory.generated_at if directory else None)
    return {
        "directory": None if directory is None else {
            "netuid": directory.netuid, "block": directory.block, "validator_hotkey": directory.validator_hotkey,
            "age_seconds": round(now - fetched_at, 1) if fetched_at else None,
            "validator_reachable": gateway.directory.validator_reachable},
        "window_seconds": window,
        "miners": rows,
        "validator": {"reachable": scores is not None, "error": error,
                      "weight_steps": (scores or {}).get("weight_steps"),
                      "last_weight_set": (scores or {}).get("last_weight_set")},
    }

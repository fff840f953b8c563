"""Per-minute roll-ups of the request logs: what the dashboard charts, at any traffic.

    rows = rollup(logs)                      # pure: a batch of RequestLogs → upserts, per minute
    await write(tx, rows)                    # inside the recorder's transaction (one per batch)
    await Rollups(db).usage(since, until)    # {minute: counters}, a few hundred rows for a day

The dashboard could aggregate ``request_logs`` directly, but a busy gateway
writes millions of rows a day, and on SQLite a long scan would hold the
worker's only store thread (key look-ups, rate limits) for seconds. These
tables grow with minutes × keys, not with requests: the recorder adds each
batch to them in the transaction that writes the batch, so they are exactly
as current as the logs, and the request path pays nothing.

Latency percentiles come from a histogram per minute: buckets ``BASE_MS ·
RATIO^i`` apart, interpolated inside the bucket that holds the quantile (as
Prometheus's ``histogram_quantile`` does), so p50 and p99 are within about
±12% of the exact value over any range, and ranges merge by adding counts.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from .plans import ExecuteMany, Plan
from .records import RequestLog

BASE_MS = 1.0
RATIO = 1.25
BOUNDS_MS = [BASE_MS * RATIO**i for i in range(54)]  # 1 ms … ~170 s; one more bucket above

OUTCOME_COLUMNS = {"ok": "ok", "rejected": "rejected", "error": "errors", "miner_error": "errors",
                   "client_closed": "client_closed"}
USAGE_COUNTERS = ("requests", "ok", "rejected", "errors", "client_closed", "prompt_tokens", "completion_tokens",
                  "latency_ms_sum")
MINER_COUNTERS = ("calls", "wins", "latency_ms_sum", "latency_n", "first_chunk_ms_sum", "first_chunk_n")


def number(column: str, value: Any) -> float | int:
    """SUMs come back as Decimal from PostgreSQL; sums of times are floats, everything else counts."""
    return float(value or 0) if column.endswith("_sum") else int(value or 0)


def bucket_of(latency_ms: float) -> int:
    """Index of the first bound at or above the latency (``len(BOUNDS_MS)``: above the last)."""
    return bisect.bisect_left(BOUNDS_MS, latency_ms)


def quantile(histogram: dict[int, int], q: float) -> Optional[float]:
    """The ``q``-quantile (0–1) in ms of a {bucket: count} histogram; None when empty."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(histogram):
        count = histogram[bucket]
        if count and seen + count >= rank:
            low = 0.0 if bucket == 0 else BOUNDS_MS[bucket - 1]
            high = BOUNDS_MS[bucket] if bucket < len(BOUNDS_MS) else BOUNDS_MS[-1] * RATIO
            return low + (high - low) * max(0.0, rank - seen) / count
        seen += count
    return BOUNDS_MS[-1] * RATIO


@dataclass
class Rows:
    usage: dict[tuple[int, str], list] = field(default_factory=dict)
    latency: dict[tuple[int, int], int] = field(default_factory=dict)
    miners: dict[tuple[int, int, str, str], list] = field(default_factory=dict)


def rollup(logs: Iterable[RequestLog]) -> Rows:
    rows = Rows()
    for log in logs:
        minute = int(log.created_at // 60)
        usage = rows.usage.setdefault((minute, log.key_id), [0, 0, 0, 0, 0, 0, 0, 0.0])
        usage[0] += 1
        column = OUTCOME_COLUMNS.get(log.outcome, "errors")
        usage[USAGE_COUNTERS.index(column)] += 1
        usage[5] += log.prompt_tokens
        usage[6] += log.completion_tokens
        usage[7] += float(log.latency_ms)
        latency_key = (minute, bucket_of(log.latency_ms))
        rows.latency[latency_key] = rows.latency.get(latency_key, 0) + 1
        for miner in log.miners:
            counters = rows.miners.setdefault((minute, miner.uid, miner.hotkey, miner.outcome), [0, 0, 0.0, 0, 0.0, 0])
            counters[0] += 1
            counters[1] += int(miner.winner)
            if miner.latency_ms is not None:
                counters[2] += float(miner.latency_ms)
                counters[3] += 1
            if miner.first_chunk_ms is not None:
                counters[4] += float(miner.first_chunk_ms)
                counters[5] += 1
    return rows


def _upsert(table: str, keys: tuple[str, ...], counters: tuple[str, ...]) -> str:
    columns = keys + counters
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    added = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counters)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}")


USAGE_UPSERT = _upsert("usage_minutes", ("minute", "key_id"), USAGE_COUNTERS)
LATENCY_UPSERT = _upsert("latency_minutes", ("minute", "bucket"), ("requests",))
MINER_UPSERT = _upsert("miner_minutes", ("minute", "uid", "hotkey", "outcome"), MINER_COUNTERS)


def write(rows: Rows) -> Plan[None]:
    """Add a batch's roll-ups: statements for the caller's plan (``yield from write(rows)``)."""
    if rows.usage:
        yield ExecuteMany(USAGE_UPSERT, [(*k, *v) for k, v in sorted(rows.usage.items())])
    if rows.latency:
        yield ExecuteMany(LATENCY_UPSERT, [(*k, v) for k, v in sorted(rows.latency.items())])
    if rows.miners:
        yield ExecuteMany(MINER_UPSERT, [(*k, *v) for k, v in sorted(rows.miners.items())])


class Rollups:
    """Read the roll-ups back; times are Unix seconds, ``until`` exclusive."""

    def __init__(self, db: Any):
        self.db = db

    async def usage(self, since: float, until: float, key_id: Optional[str] = None) -> dict[int, dict]:
        """{minute: summed counters} over every key, or one."""
        where, args = "minute >= $1 AND minute < $2", [int(since // 60), int(-(-until // 60))]
        if key_id is not None:
            args.append(key_id)
            where += " AND key_id = $3"
        sums = ", ".join(f"SUM({c}) AS {c}" for c in USAGE_COUNTERS)
        rows = await self.db.fetch(f"SELECT minute, {sums} FROM usage_minutes WHERE {where} GROUP BY minute", *args)
        return {r["minute"]: {c: number(c, r[c]) for c in USAGE_COUNTERS} for r in rows}

    async def latency(self, since: float, until: float) -> dict[int, dict[int, int]]:
        """{minute: {bucket: requests}}."""
        rows = await self.db.fetch("SELECT minute, bucket, requests FROM latency_minutes"
                                   " WHERE minute >= $1 AND minute < $2", int(since // 60), int(-(-until // 60)))
        found: dict[int, dict[int, int]] = {}
        for r in rows:
            found.setdefault(r["minute"], {})[r["bucket"]] = int(r["requests"])
        return found

    async def top_keys(self, since: float, until: float, limit: int = 10) -> list[dict]:
        rows = await self.db.fetch(
            "SELECT key_id, SUM(requests) AS requests, SUM(prompt_tokens + completion_tokens) AS tokens,"
            " SUM(errors) AS errors, SUM(rejected) AS rejected FROM usage_minutes WHERE minute >= $1 AND minute < $2"
            " GROUP BY key_id ORDER BY SUM(requests) DESC, key_id LIMIT $3",
            int(since // 60), int(-(-until // 60)), limit)
        return [dict(key_id=r["key_id"], **{c: number(c, r[c]) for c in ("requests", "tokens", "errors", "rejected")})
                for r in rows]

    async def miners(self, since: float, until: float) -> list[dict]:
        """Per (uid, hotkey, outcome): calls, wins and latency sums."""
        sums = ", ".join(f"SUM({c}) AS {c}" for c in MINER_COUNTERS)
        rows = await self.db.fetch(
            f"SELECT uid, hotkey, outcome, {sums} FROM miner_minutes WHERE minute >= $1 AND minute < $2"
            " GROUP BY uid, hotkey, outcome", int(since // 60), int(-(-until // 60)))
        return [dict(uid=r["uid"], hotkey=r["hotkey"], outcome=r["outcome"],
                     **{c: number(c, r[c]) for c in MINER_COUNTERS}) for r in rows]

    async def prune(self, tx: Any, before: float) -> None:
        minute = int(before // 60)
        for table in ("usage_minutes", "latency_minutes", "miner_minutes"):
            await tx.execute(f"DELETE FROM {table} WHERE minute < $1", minute)

"""The dashboard's roll-ups and sessions on real SQLite and PostgreSQL; the latency histogram's accuracy."""

from __future__ import annotations

import random
import time

from api.dashboard.overview import traffic
from api.key_admin import KeyAdmin
from api.key_fields import KeySpec
from api.store import MinerLog, RequestLog, open_store
from api.store.rollups import quantile, rollup
from api.store.sessions import Session


def log(key_id: str, at: float, outcome: str = "ok", latency: float = 50.0, status: int = 200, **extra) -> RequestLog:
    return RequestLog(request_id=f"r{random.getrandbits(48)}", key_id=key_id, created_at=at,
                      path="/v1/chat/completions", status=status, outcome=outcome, latency_ms=latency,
                      task="InferenceTask", **extra)


def test_percentiles_from_the_histogram_are_within_twelve_percent():
    rng = random.Random(7)
    latencies = [rng.lognormvariate(4.0, 1.0) for _ in range(20_000)]  # ~55 ms median, long tail
    histogram: dict[int, int] = {}
    for row in rollup(log("k", 0.0, latency=ms) for ms in latencies).latency.items():
        histogram[row[0][1]] = row[1]
    exact = sorted(latencies)
    for q in (0.5, 0.9, 0.99):
        estimate, truth = quantile(histogram, q), exact[int(q * len(exact)) - 1]
        assert abs(estimate - truth) / truth < 0.12, (q, estimate, truth)
    assert quantile({}, 0.5) is None


async def test_rollups_follow_the_recorded_logs(database):
    store = await open_store(*database)
    try:
        _, alice = await KeyAdmin(store).create(KeySpec(name="alice"))
        _, bob = await KeyAdmin(store).create(KeySpec(name="bob"))
        now = time.time()
        miners = [MinerLog(uid=1, hotkey="hk1", outcome="ok", latency_ms=40.0, first_chunk_ms=10.0, winner=True),
                  MinerLog(uid=2, hotkey="hk2", outcome="error", latency_ms=5.0)]
        batch = [log(alice.id, now - 30, latency=100.0, prompt_tokens=2, completion_tokens=5, miners=miners),
                 log(alice.id, now - 20, latency=300.0, completion_tokens=5, miners=miners[:1]),
                 log(alice.id, now - 10, outcome="rejected", status=429, latency=1.0),
                 log(bob.id, now - 5, outcome="error", status=502, latency=20.0, miners=miners[1:]),
                 log(bob.id, now - 7200, latency=10.0),  # two hours ago: in the day, not in the hour
                 log(bob.id, now - 3 * 86400, latency=10.0)]  # three days ago: in neither
        await store.record(batch[:2])
        await store.record(batch[2:])

        hour = await traffic(store, "hour", now=now)
        totals = hour["totals"]
        assert (totals["requests"], totals["ok"], totals["rejected"], totals["errors"]) == (4, 2, 1, 1)
        assert totals["success_rate"] == round(2 / 3, 4) and totals["tokens"] == 12
        assert 15 < totals["p50_ms"] <= 25 and 260 < totals["p99_ms"] <= 335  # 1, 20, 100, 300 ms
        assert [k["name"] for k in hour["top_keys"]] == ["alice", "bob"]
        assert len(hour["series"]) == 60 and hour["series"][-1]["t"] <= now < hour["series"][-1]["t"] + 60
        assert sum(slot["requests"] for slot in hour["series"]) == 4
        day = await traffic(store, "day", key_id=bob.id, now=now)
        assert (day["totals"]["requests"], day["totals"]["errors"], day["top_keys"]) == (2, 1, [])

        recent = {(r["uid"], r["outcome"]): r for r in await store.rollups.miners(now - 3600, now + 60)}
        assert (recent[(1, "ok")]["calls"], recent[(1, "ok")]["wins"], recent[(1, "ok")]["latency_ms_sum"]) == \
            (2, 2, 80.0)
        assert recent[(2, "error")]["calls"] == 2 and recent[(1, "ok")]["first_chunk_n"] == 2

        await store.prune(now - 60)  # logs go; roll-ups of the last two days stay whatever the retention
        assert len(await store.query_logs(limit=10)) == 4
        assert (await traffic(store, "day", now=now))["totals"]["requests"] == 5
        assert sum(m["requests"] for m in (await store.rollups.usage(now - 4 * 86400, now)).values()) == 5
    finally:
        await store.close()


async def test_sessions_are_shared_and_expire(database):
    first, second = await open_store(*database), await open_store(*database)
    try:
        now = time.time()
        await first.sessions.create(Session("h1", "csrf1", "fp", now, now + 60))
        await first.sessions.create(Session("old", "csrf0", "fp", now - 120, now - 60))
        assert (await second.sessions.get("h1")).csrf_token == "csrf1"  # any worker sees it
        await second.sessions.create(Session("h2", "csrf2", "fp", now, now + 60))
        assert await first.sessions.get("old") is None  # expired ones are swept when a session opens
        await second.sessions.delete("h1")
        assert await first.sessions.get("h1") is None and await first.sessions.get("h2") is not None
    finally:
        await first.close()
        await second.close()

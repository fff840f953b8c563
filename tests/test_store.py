"""The store on real SQLite and PostgreSQL, and the rate limiter on Redis: what must be exact under concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time

import pytest
from store_fixtures import drop_redis_prefix, unique_name

from api.key_admin import KeyAdmin
from api.key_fields import KeySpec
from api.keys import LARGEST_COUNT, hash_key
from api.ratelimit import RedisRateLimiter, Window, parse_windows
from api.store import MinerLog, RequestLog, Store, open_store
from api.store.conversations import Conversations
from api.store.migrations import MIGRATIONS


async def two_stores(database) -> tuple[Store, Store]:
    """Two stores on one database: two workers, as far as the database can tell."""
    return await open_store(*database), await open_store(*database)


async def test_credits_are_never_overspent(database):
    first, second = await two_stores(database)
    try:
        _, key = await KeyAdmin(first).create(KeySpec(credits=10))
        results = await asyncio.gather(*(store.debit(key.id, 1) for store in (first, second) for _ in range(32)))
        assert sum(r is not None for r in results) == 10
        assert sorted(r for r in results if r is not None) == list(range(10))
        after = await first.key_by_id(key.id)
        assert (after.credits, after.credits_used) == (0, 10)
        await second.refund(key.id, 1)
        assert (await first.key_by_id(key.id)).credits == 1
    finally:
        await first.close()
        await second.close()


async def test_store_rate_limit_is_exact_across_stores(database):
    first, second = await two_stores(database)
    try:
        windows = [Window(5, 60), Window(7, 3600)]
        decisions = await asyncio.gather(*(store.rate_hit("key_x", windows) for _ in range(10)
                                           for store in (first, second)))
        assert sum(d.allowed for d in decisions) == 5
        refused = [d for d in decisions if not d.allowed]
        assert all(50 < d.retry_after <= 60 for d in refused)
        assert refused[0].refused_by().window == Window(5, 60)
        peek = await first.rate_hit("key_x", windows, commit=False)
        assert [s.used for s in peek.states] == [5, 5] and peek.tightest.remaining == 0
    finally:
        await first.close()
        await second.close()


async def test_logs_usage_and_retention(database):
    store = await open_store(*database)
    try:
        _, key = await KeyAdmin(store).create(KeySpec(name="logged"))
        now = time.time()
        logs = [RequestLog(request_id=f"r{i}", key_id=key.id, created_at=now - 100 + i, path="/v1/chat/completions",
                           status=200, outcome="ok", latency_ms=10.0 + i, task="InferenceTask", strategy="sample",
                           prompt_tokens=3, completion_tokens=5, charged=1,
                           miners=[MinerLog(uid=1 + i % 2, hotkey=f"hk{1 + i % 2}", outcome="ok", winner=True),
                                   MinerLog(uid=9, hotkey="hk9", outcome="error", error="HTTP 500")])
                for i in range(4)]
        await store.record(logs[:3])
        await store.record(logs[3:])
        found = await store.query_logs(key_id=key.id)
        assert [log.request_id for log in found] == ["r3", "r2", "r1", "r0"]
        assert [(m.uid, m.outcome, m.winner) for m in found[0].miners] == [(2, "ok", True), (9, "error", False)]
        assert [log.request_id for log in await store.query_logs(uid=1)] == ["r2", "r0"]
        assert [log.request_id for log in await store.query_logs(hotkey="hk2", since=now - 98.5)] == ["r3"]
        assert len(await store.query_logs(until=now - 98.5)) == 2
        totals = await store.key_by_id(key.id)
        assert (totals.requests, totals.prompt_tokens, totals.completion_tokens, totals.charged) == (4, 12, 20, 4)
        assert [d["requests"] for d in await store.daily_usage(key.id)] in ([4], [1, 3], [3, 1], [2, 2])
        assert await store.prune(now - 98.5) == 2
        assert [log.request_id for log in await store.query_logs(uid=9)] == ["r3", "r2"]
    finally:
        await store.close()


def test_a_key_is_stored_as_its_sha256_hex_digest():
    """What earlier releases stored (and a subnet's imported keys hold): the same digest, every time."""
    for key in ("", "sk-sn-abc", "x" * 1000, "ключ"):
        assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert hash_key("a") != hash_key("b") and hash_key("a") == hash_key("a")


async def test_keys_are_stored_hashed_and_found_by_id_or_key(database):
    store = await open_store(*database)
    try:
        admin = KeyAdmin(store)
        plain, key = await admin.create(KeySpec(name="secret", rate_limits="60 per minute and 1000 per day",
                                                allowed_models="default,m1", expires_at="2030-01-01T00:00:00Z"))
        assert (await admin.find(plain)).id == key.id == (await admin.find(key.id)).id
        row = await store.db.fetchrow("SELECT * FROM api_keys WHERE id = $1", key.id)
        stored = json.dumps([str(v) for v in dict(row).values()])
        assert plain not in stored and plain[-12:] not in stored and hash_key(plain) in stored
        assert key.rate_limits == (Window(60, 60), Window(1000, 86400))
        assert key.allowed_models == ("default", "m1") and key.expires_at == 1893456000.0
        changed = await admin.modify(key.id, KeySpec(rate_limit=30, credits="unlimited", expires_at="never"))
        assert changed.rate_limits == (Window(30, 60), Window(1000, 86400))
        assert (changed.credits, changed.expires_at) == (None, None)
        assert (await admin.modify(plain, KeySpec(credits=5, add_credits=2))).credits == 7
        assert (await admin.modify(plain, KeySpec(add_credits=-100))).credits == 0
        assert await admin.delete(plain) and await admin.find(key.id) is None
        assert not await admin.delete(plain)
    finally:
        await store.close()


async def test_top_ups_stop_at_the_largest_count_instead_of_overflowing_a_column(database):
    """Top-ups at the limit, on both stores: the balance stays at ``LARGEST_COUNT``. Unclamped, a 64-bit
    column would overflow after about a thousand of them (PostgreSQL refuses, SQLite turns to floats)."""
    store = await open_store(*database)
    try:
        admin = KeyAdmin(store)
        plain, key = await admin.create(KeySpec(credits=LARGEST_COUNT, add_credits=LARGEST_COUNT))
        assert key.credits == LARGEST_COUNT
        for _ in range(3):
            topped = await admin.modify(plain, KeySpec(add_credits=LARGEST_COUNT))
        assert topped.credits == LARGEST_COUNT and isinstance(topped.credits, int)
        assert (await admin.modify(plain, KeySpec(credits=10, add_credits=LARGEST_COUNT))).credits == LARGEST_COUNT
    finally:
        await store.close()


async def test_key_changes_bump_the_generation_seen_by_other_stores(database):
    first, second = await two_stores(database)
    try:
        _, key = await KeyAdmin(first).create(KeySpec())
        before = second.keys_generation()
        await KeyAdmin(first).modify(key.id, KeySpec(enabled=False))
        for _ in range(100):  # a NOTIFY arrives asynchronously; a file size at once
            if second.keys_generation() != before:
                break
            await asyncio.sleep(0.01)
        assert second.keys_generation() != before
    finally:
        await first.close()
        await second.close()


async def test_migrations_run_once_and_carry_over_first_release_keys(tmp_path):
    path = tmp_path / "api.sqlite"
    legacy = sqlite3.connect(path)
    legacy.execute("CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, key_hint TEXT NOT NULL, name TEXT NOT NULL"
                   " DEFAULT '', rate_limit INTEGER, enabled INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL)")
    legacy.execute("INSERT INTO api_keys VALUES (?, 'sk-sn-old…', 'old', 7, 1, 1.0)", (hash_key("sk-sn-old"),))
    legacy.commit()
    legacy.close()
    stores = await asyncio.gather(*(open_store("", path) for _ in range(3)))
    try:
        assert await stores[0].migrate() == MIGRATIONS[-1][0]
        versions = await stores[0].db.fetch("SELECT version FROM schema_version")
        assert [r["version"] for r in versions] == [v for v, _, _ in MIGRATIONS]
        old = await stores[1].key_by_hash(hash_key("sk-sn-old"))
        assert (old.name, old.rate_limits, old.enabled) == ("old", (Window(7, 60),), True)
    finally:
        for store in stores:
            await store.close()


async def test_redis_rate_limit_is_exact_across_clients(redis_url):
    prefix = unique_name("test") + ":"
    limiters = [RedisRateLimiter(redis_url, prefix) for _ in range(2)]
    try:
        windows = parse_windows("7 per minute and 9 per hour")
        decisions = await asyncio.gather(*(lim.hit("key_r", windows) for _ in range(15) for lim in limiters))
        assert sum(d.allowed for d in decisions) == 7
        assert all(55 < d.retry_after <= 60 for d in decisions if not d.allowed)
        peek = await limiters[1].peek("key_r", windows)
        assert [(s.used, s.remaining) for s in peek.states] == [(7, 0), (7, 2)]
        assert dict(peek.headers())[b"x-ratelimit-remaining"] == b"0"
    finally:
        for limiter in limiters:
            await limiter.close()
        drop_redis_prefix(redis_url, prefix)


def test_rate_limit_text_and_key_fields():
    assert parse_windows("60 per minute and 1000 per day") == [Window(60, 60), Window(1000, 86400)]
    assert parse_windows("10/30 seconds; 5 per second") == [Window(5, 1), Window(10, 30)]
    for bad in ("sixty per minute", "10 per fortnight", "0 per minute"):
        with pytest.raises(ValueError):
            parse_windows(bad)
    spec = KeySpec.model_validate({"credits": "unlimited", "allowed_tasks": "any", "rate_limits": "none"})
    assert spec.changes(None) == ({"credits": None, "allowed_tasks": None, "rate_limits": []}, 0)
    with pytest.raises(ValueError):
        KeySpec.model_validate({"allowed_tasks": "NoSuchTask"})
    with pytest.raises(ValueError):
        KeySpec.model_validate({"expires_at": "next tuesday"})


async def test_recorder_writes_everything_submitted_by_shutdown(tmp_path):
    from api.recorder import Recorder

    store = await open_store("", tmp_path / "api.sqlite")
    try:
        _, key = await KeyAdmin(store).create(KeySpec())
        recorder = Recorder(store, batch_size=7, interval=60.0)  # nothing would be written for a minute
        running = asyncio.create_task(recorder.run())
        for i in range(20):
            recorder.submit(RequestLog(request_id=f"s{i}", key_id=key.id, created_at=time.time(), path="/x",
                                       status=200, outcome="ok", latency_ms=1.0, completion_tokens=2))
        recorder.stop()
        await asyncio.wait_for(running, timeout=5)
        await recorder.drain(timeout=5)
        assert len(await store.query_logs(key_id=key.id)) == 20
        assert (await store.key_by_id(key.id)).completion_tokens == 40
    finally:
        await store.close()


async def test_conversations_belong_to_their_key_and_keep_order_across_workers(database):
    first, second = await two_stores(database)
    one, two = Conversations(first.db), Conversations(second.db)
    try:
        created = await one.create(owner="alice", messages=[{"role": "system", "content": "s"}],
                                   metadata={"topic": "t"})
        assert (await two.get(created.id, owner="alice")).metadata == {"topic": "t"}  # another worker sees it
        assert await two.get(created.id, owner="bob") is None
        assert not await two.append(created.id, owner="bob", messages=[{"role": "user", "content": "x"}])
        await asyncio.gather(*(store.append(created.id, owner="alice", messages=[
            {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}])
            for i in range(6) for store in (one, two)))
        messages = (await one.get(created.id, owner="alice")).messages
        assert len(messages) == 25 and messages[0]["role"] == "system"
        for user, reply in zip(messages[1::2], messages[2::2]):  # each turn's two messages stay together
            assert user["content"][1:] == reply["content"][1:]
        assert not await two.delete(created.id, owner="bob")
        assert await two.delete(created.id, owner="alice")
        assert await one.get(created.id, owner="alice") is None
    finally:
        await first.close()
        await second.close()

"""Plans (``api.store.plans``) on real SQLite and PostgreSQL: group commits that stay exact and isolated.

The SQLite driver runs every plan queued during one loop turn in one transaction, each in its own
savepoint. What must hold: a plan that fails undoes only its own writes; a caller that is cancelled
while its plan waits does not leave half of it written; concurrent debits and rate-limit checks from
two stores on one database stay exact; and the batching really happens (fewer trips than plans).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from api.key_admin import KeyAdmin
from api.key_fields import KeySpec
from api.ratelimit import Window
from api.store import open_store
from api.store.plans import Execute, FetchRow
from api.store.store import debit_plan


def failing_after_a_write(key_id: str):
    """Spends 5 credits, then fails: none of the 5 may stay spent."""
    yield Execute("UPDATE api_keys SET credits = credits - 5 WHERE id = $1", key_id)
    raise ValueError("the plan changed its mind")


def balance_plan(key_id: str):
    row = yield FetchRow("SELECT credits FROM api_keys WHERE id = $1", key_id)
    return row["credits"]


async def test_a_failing_plan_undoes_only_itself(database):
    store = await open_store(*database)
    try:
        _, key = await KeyAdmin(store).create(KeySpec(credits=100))
        results = await asyncio.gather(store.db.run(debit_plan(key.id, 1)),
                                       store.db.run(failing_after_a_write(key.id)),
                                       store.db.run(debit_plan(key.id, 1)),
                                       return_exceptions=True)
        assert results[0] in (98, 99) and results[2] in (98, 99) and results[0] != results[2]
        assert isinstance(results[1], ValueError)
        assert await store.db.run(balance_plan(key.id)) == 98
    finally:
        await store.close()


async def test_a_cancelled_caller_leaves_its_plan_whole(database):
    store = await open_store(*database)
    try:
        _, key = await KeyAdmin(store).create(KeySpec(credits=10))
        waiting = asyncio.ensure_future(store.debit(key.id, 3))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.2)
        record = await store.key_by_id(key.id)
        # Queued before the cancel: it ran, whole (never half: balance and used move together).
        assert (record.credits, record.credits_used) in ((7, 3), (10, 0))
        assert record.credits + record.credits_used == 10
    finally:
        await store.close()


async def test_debits_and_rate_checks_from_two_stores_stay_exact(database):
    first, second = await open_store(*database), await open_store(*database)
    try:
        _, key = await KeyAdmin(first).create(KeySpec(credits=40))
        windows = [Window(25, 60)]

        async def admit(store) -> bool:
            decision = await store.rate_hit(key.id, windows)
            return decision.allowed and await store.debit(key.id, 1) is not None

        admitted = await asyncio.gather(*(admit(store) for _ in range(30) for store in (first, second)))
        assert sum(admitted) == 25  # the rate limit binds first
        record = await first.key_by_id(key.id)
        assert (record.credits, record.credits_used) == (15, 25)
        more = await asyncio.gather(*(first.debit(key.id, 1) for _ in range(20)))
        assert sum(r is not None for r in more) == 15 and (await first.key_by_id(key.id)).credits == 0
    finally:
        await first.close()
        await second.close()


async def test_sqlite_commits_queued_plans_together(tmp_path):
    store = await open_store("", tmp_path / "api.sqlite", "")
    try:
        _, key = await KeyAdmin(store).create(KeySpec(credits=1000))
        trips = 0
        run = store.db._run

        async def counted(work):
            nonlocal trips
            trips += 1
            return await run(work)

        store.db._run = counted
        results = await asyncio.gather(*(store.debit(key.id, 1) for _ in range(200)))
        assert sorted(results) == list(range(800, 1000))
        assert trips <= 5, f"{trips} trips to the SQLite thread for 200 debits queued in one turn"
    finally:
        await store.close()


async def test_the_rate_log_migration_numbers_the_events_already_logged(database, monkeypatch):
    """A deployment at version 4 has events in ``rate_events``; after migration 5 its windows count the same."""
    import api.store.store as store_module
    from api.store.migrations import MIGRATIONS

    monkeypatch.setattr(store_module, "MIGRATIONS", [m for m in MIGRATIONS if m[0] <= 4])
    old = await open_store(*database)
    now = time.time()
    try:
        # Out of time order on purpose, and two keys interleaved.
        for key_id, ago in [("k1", 30), ("k2", 5), ("k1", 50), ("k1", 10), ("k2", 70), ("k1", 20), ("k1", 4000)]:
            await old.db.execute("INSERT INTO rate_events (key_id, at) VALUES ($1, $2)", key_id, now - ago)
    finally:
        await old.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    store = await open_store(*database)
    try:
        rows = await store.db.fetch("SELECT key_id, at, n FROM rate_log ORDER BY key_id, n")
        for key_id in ("k1", "k2"):
            mine = [row for row in rows if row["key_id"] == key_id]
            assert [row["n"] for row in mine] == list(range(1, len(mine) + 1))
            assert [row["at"] for row in mine] == sorted(row["at"] for row in mine)
        peek = await store.rate_hit("k1", [Window(10, 60), Window(100, 3600)], commit=False)
        assert [s.used for s in peek.states] == [4, 4]  # 10, 20, 30, 50 s ago; 4,000 s ago is outside both
        decisions = [await store.rate_hit("k1", [Window(10, 60)]) for _ in range(8)]
        assert [d.allowed for d in decisions] == [True] * 6 + [False] * 2
        assert 5 < decisions[-1].retry_after <= 10.5  # the oldest in the window (50 s ago) leaves in ~10 s
    finally:
        await store.close()


async def test_a_clock_that_goes_back_cannot_stretch_a_limit(database, monkeypatch):
    """Two hosts whose clocks disagree by seconds share one log: a limit of 5 per minute still admits 5."""
    import api.store.store as store_module

    store = await open_store(*database)
    try:
        base = time.time()
        offsets = iter([0.0, -3.0, 0.5, -2.0, 1.0, -4.0, 0.2, -1.0, 0.0, -2.5])
        monkeypatch.setattr(store_module.time, "time", lambda: base + next(offsets))
        decisions = [await store.rate_hit("skewed", [Window(5, 60)]) for _ in range(10)]
        monkeypatch.undo()
        assert sum(d.allowed for d in decisions) == 5
        rows = await store.db.fetch("SELECT at, n FROM rate_log WHERE key_id = $1 ORDER BY n", "skewed")
        assert [row["n"] for row in rows] == [1, 2, 3, 4, 5]
        assert [row["at"] for row in rows] == sorted(row["at"] for row in rows)
    finally:
        await store.close()

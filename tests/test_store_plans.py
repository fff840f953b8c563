"""Plans (``api.store.plans``) on real SQLite and PostgreSQL: group commits that stay exact and isolated.

The SQLite driver runs every plan queued during one loop turn in one transaction, each in its own
savepoint. What must hold: a plan that fails undoes only its own writes; a caller that is cancelled
while its plan waits does not leave half of it written; concurrent debits and rate-limit checks from
two stores on one database stay exact; and the batching really happens (fewer trips than plans).
"""

from __future__ import annotations

import asyncio

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


async def test_sqlite_commits_a_loop_turn_of_plans_together(tmp_path):
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

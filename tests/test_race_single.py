"""``api.race``'s shortcut for one racer in flight: the same winner, the same replacements, ``first`` untouched."""

from __future__ import annotations

import asyncio

import pytest

from api.errors import ApiError
from api.miner_call import MinerCall
from api.race import race
from shared.schemas import MinerRecord


def miner(uid: int) -> MinerRecord:
    return MinerRecord(uid=uid, hotkey=f"hk{uid}", address="127.0.0.1:1", incentive=0.1, stake=1.0)


def launcher(outcomes: dict[int, bool], started: list[MinerCall]):
    """Each launched call commits (True) or fails (False) on a later turn of the loop, as a real call would."""
    loop = asyncio.get_running_loop()

    def launch(record: MinerRecord) -> MinerCall:
        call = MinerCall(record)
        started.append(call)
        loop.call_later(0.001, call._settle_first, outcomes[record.uid])
        return call

    return launch


async def test_a_failing_single_racer_is_replaced_until_one_commits():
    started: list[MinerCall] = []
    calls: list[MinerCall] = []
    winner = await race([miner(1), miner(2), miner(3)], fanout=1, max_attempts=3,
                        launch=launcher({1: False, 2: False, 3: True}, started), calls=calls)
    assert winner.miner.uid == 3
    assert [c.miner.uid for c in calls] == [1, 2, 3]  # every miner asked stays recorded (request log, scoring)


async def test_single_racers_that_all_fail_are_a_502():
    calls: list[MinerCall] = []
    with pytest.raises(ApiError) as raised:
        await race([miner(1), miner(2)], fanout=1, max_attempts=2, launch=launcher({1: False, 2: False}, []),
                   calls=calls)
    assert raised.value.status == 502 and len(calls) == 2


async def test_two_racers_then_one_left_after_a_failure():
    calls: list[MinerCall] = []
    loop = asyncio.get_running_loop()

    def launch(record: MinerRecord) -> MinerCall:
        call = MinerCall(record)
        loop.call_later({1: 0.001, 2: 0.02}[record.uid], call._settle_first, record.uid == 2)
        return call

    winner = await race([miner(1), miner(2)], fanout=2, max_attempts=2, launch=launch, calls=calls)
    assert winner.miner.uid == 2 and len(calls) == 2


async def test_cancelling_the_race_leaves_the_racers_first_alone():
    calls: list[MinerCall] = []
    task = asyncio.create_task(race([miner(1)], fanout=1, max_attempts=1,
                                    launch=lambda record: MinerCall(record), calls=calls))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (call,) = calls
    assert not call.first.done()  # still open: the call goes on, and resolves it for its other readers
    call._settle_first(True)
    assert call.first.result() is True


async def test_a_racer_that_committed_before_the_wait_wins_at_once():
    calls: list[MinerCall] = []

    def launch(record: MinerRecord) -> MinerCall:
        call = MinerCall(record)
        call._settle_first(True)
        return call

    winner = await race([miner(7)], fanout=1, max_attempts=1, launch=launch, calls=calls)
    assert winner.miner.uid == 7


async def test_a_preference_with_a_single_racer_left_still_replaces_and_wins():
    from api.race import Preference

    prefer = Preference(rating=lambda record: float(record.uid), expected=lambda uid: 0.001, patience=0.05)
    calls: list[MinerCall] = []
    winner = await race([miner(1), miner(2)], fanout=1, max_attempts=2,
                        launch=launcher({1: False, 2: True}, []), calls=calls, prefer=prefer)
    assert winner.miner.uid == 2 and [c.miner.uid for c in calls] == [1, 2]


def alone_runner(outcome: bool, calls: list[MinerCall], ran: list[int]):
    """``run_alone`` as the chat core's: the call appended to ``calls`` and run here, to its end."""

    async def run_alone(record: MinerRecord) -> MinerCall:
        call = MinerCall(record)
        calls.append(call)
        ran.append(record.uid)
        await asyncio.sleep(0.001)  # the miner answers on a later turn of the loop
        if not outcome:
            call.status, call.error = "error", "HTTP 500: broken"
        call._settle_first(outcome)
        return call

    return run_alone


async def test_a_lone_candidate_runs_in_the_callers_task_and_wins():
    calls: list[MinerCall] = []
    ran: list[int] = []
    launched: list[MinerCall] = []
    winner = await race([miner(4)], fanout=3, max_attempts=6, launch=launcher({4: True}, launched), calls=calls,
                        run_alone=alone_runner(True, calls, ran))
    assert winner.miner.uid == 4 and winner.task is None and ran == [4] and launched == []
    assert calls == [winner]


async def test_a_lone_candidate_that_fails_is_a_502_naming_its_failure():
    calls: list[MinerCall] = []
    with pytest.raises(ApiError) as raised:
        await race([miner(4)], fanout=3, max_attempts=6, launch=launcher({4: True}, []), calls=calls,
                   run_alone=alone_runner(False, calls, []))
    assert raised.value.status == 502 and "uid 4: HTTP 500: broken" in raised.value.message
    assert len(calls) == 1


async def test_with_a_shadow_or_a_second_candidate_the_race_runs_as_before():
    ran: list[int] = []
    for candidates, shadows in (([miner(1), miner(2)], []), ([miner(1)], [MinerCall(miner(9))])):
        calls: list[MinerCall] = []
        launched: list[MinerCall] = []
        for shadow in shadows:
            shadow._settle_first(False)
        winner = await race(candidates, fanout=2, max_attempts=2, launch=launcher({1: True, 2: True}, launched),
                            calls=calls, shadows=shadows, run_alone=alone_runner(True, calls, ran))
        assert winner in launched and len(launched) == len(candidates)
    assert ran == []

"""``shared.lazy_deadline`` on uvloop, the loop every server here runs on.

uvloop answers ``call_at`` less than a millisecond ahead with a plain ``Handle`` (no ``when()``) and its clock
counts whole milliseconds; a deadline set that close, or re-armed that close when its timer fired a fraction
of a millisecond early, once raised ``AttributeError`` at the next ``set`` (inside a request's callbacks, under
load: connections dropped with an answer owed).
"""

from __future__ import annotations

import asyncio

import uvloop

from shared.lazy_deadline import LazyDeadline


def on_uvloop(scenario) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


def test_a_deadline_less_than_a_millisecond_away_fires_once_and_can_be_set_again():
    async def scenario():
        loop = asyncio.get_running_loop()
        fired = []
        deadline = LazyDeadline(loop, lambda: fired.append(loop.time()))
        deadline.set(0.0004)  # uvloop: a Handle for the next turn, not a TimerHandle
        deadline.set(5.0)  # used to ask that Handle for its when()
        deadline.set(0.0002)
        await asyncio.sleep(0.01)
        assert len(fired) == 1 and deadline.when is None
        deadline.set(0.02)
        await asyncio.sleep(0.05)
        assert len(fired) == 2

    on_uvloop(scenario)


def test_moving_a_deadline_a_fraction_of_a_millisecond_later_many_times_never_fails_and_fires_on_time():
    async def scenario():
        loop = asyncio.get_running_loop()
        fired = []
        deadline = LazyDeadline(loop, lambda: fired.append(loop.time()))
        start = loop.time()
        for step in range(200):  # what a busy backlog or connection does: clear, then set a little later
            deadline.clear()
            deadline.set(0.05 + (step % 7) * 0.0003)  # its timer fires meanwhile and re-arms, often < 1 ms ahead
            await asyncio.sleep(0.0005 * (step % 3))
        assert fired == []
        last = deadline.when
        while not fired:
            await asyncio.sleep(0.001)
        assert len(fired) == 1 and fired[0] >= last - 0.0011
        assert loop.time() - start < 2.0
        deadline.stop()

    on_uvloop(scenario)


def test_a_cleared_deadline_does_not_fire_and_stop_disarms_the_timer():
    async def scenario():
        loop = asyncio.get_running_loop()
        fired = []
        deadline = LazyDeadline(loop, lambda: fired.append(1))
        deadline.set(0.005)
        deadline.clear()
        await asyncio.sleep(0.02)
        deadline.set(0.005)
        deadline.stop()
        await asyncio.sleep(0.02)
        assert fired == []

    on_uvloop(scenario)

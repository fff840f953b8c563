"""``api.fanout.FanOut``: width at once, a failure replaced by the next candidate while attempts and time remain."""

from __future__ import annotations

import asyncio
import time

from api.fanout import FanOut


def make(candidates, **options):
    """A fan-out whose started things are futures the test resolves by hand."""
    loop = asyncio.get_running_loop()
    futures = {}

    def start(candidate):
        futures[candidate] = loop.create_future()
        return candidate

    started: list = []
    fan = FanOut(candidates, start=start, signal=futures.__getitem__, started=started, **options)
    return fan, futures, started


async def test_width_at_once_then_one_replacement_per_failure_up_to_the_attempts():
    fan, futures, started = make(list("abcdef"), width=2, max_attempts=4)
    fan.start()
    assert started == ["a", "b"] and set(fan.running.values()) == {"a", "b"}
    futures["a"].set_result(False)
    assert await fan.settled() == ["a"]
    assert fan.replace() and started == ["a", "b", "c"]
    futures["b"].set_result(False)
    futures["c"].set_result(False)
    assert sorted(await fan.settled()) == ["b", "c"]
    assert fan.replace() and not fan.replace()  # d is the fourth attempt; e would be a fifth
    assert started == ["a", "b", "c", "d"] and list(fan.running.values()) == ["d"]


async def test_no_candidate_left_or_no_time_left_means_no_replacement():
    fan, futures, started = make(["a"], width=3, max_attempts=5)
    fan.start()
    assert started == ["a"] and not fan.replace()
    late, _, started = make(["a", "b"], width=1, max_attempts=5, deadline=time.monotonic() + 0.05, margin=0.1)
    late.start()
    assert not late.replace() and started == ["a"]  # less than the margin is left


async def test_settled_returns_nothing_when_the_timeout_passes_first():
    fan, futures, _ = make(["a"], width=1, max_attempts=1)
    fan.start()
    assert await fan.settled(timeout=0.01) == [] and list(fan.running.values()) == ["a"]

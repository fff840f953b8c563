"""``api.miner_call.Relay``: the winner's chunks reach the relay in order, in the batches they arrived in."""

from __future__ import annotations

import asyncio

import pytest

from api.miner_call import END, Relay


async def test_what_was_put_together_is_taken_together_in_order():
    relay = Relay()
    for chunk in ("a", "b", "c"):
        relay.put(chunk)
    assert await relay.take() == ["a", "b", "c"]
    relay.put("d")
    relay.put(END)
    assert await relay.take() == ["d", END]


async def test_take_waits_for_the_next_put_and_is_woken_once():
    relay = Relay()
    taken = asyncio.ensure_future(relay.take())
    await asyncio.sleep(0)
    assert not taken.done()
    relay.put("first")
    relay.put("second")  # before the taker runs: it gets both
    assert await asyncio.wait_for(taken, 1) == ["first", "second"]


async def test_a_cancelled_take_loses_nothing():
    relay = Relay()
    taken = asyncio.ensure_future(relay.take())
    await asyncio.sleep(0)
    taken.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taken
    relay.put("kept")  # no waiter left to wake, and the chunk stays queued
    assert await asyncio.wait_for(relay.take(), 1) == ["kept"]


async def test_what_came_before_the_win_comes_first():
    relay = Relay(["early 1", "early 2"])
    relay.put("later")
    assert await relay.take() == ["early 1", "early 2", "later"]

"""api.backlog: a response's books wait for the worker's next wait on a miner, or ``max_delay`` at most."""

from __future__ import annotations

import asyncio
import time

from api.backlog import Backlog


async def test_run_soon_runs_after_what_the_turn_scheduled_first() -> None:
    """The chat core calls ``run_soon`` right after starting a miner call: the call's first step (its send)
    was scheduled first and must run first, or the books would hold the request back."""
    order: list[str] = []
    backlog = Backlog(max_delay=10.0)
    backlog.add(order.append, "books")
    loop = asyncio.get_running_loop()
    loop.call_soon(order.append, "miner call's send")
    backlog.run_soon()
    backlog.run_soon()  # a race of several miners asks again: still one run
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == ["miner call's send", "books"]
    assert len(backlog) == 0


async def test_books_wait_no_longer_than_max_delay() -> None:
    ran: list[float] = []
    backlog = Backlog(max_delay=0.05)
    added = time.perf_counter()
    backlog.add(lambda: ran.append(time.perf_counter()))
    await asyncio.sleep(0.01)
    assert ran == []  # nothing made room yet
    await asyncio.sleep(0.2)
    assert len(ran) == 1 and ran[0] - added >= 0.045


async def test_run_soon_with_nothing_queued_schedules_nothing() -> None:
    backlog = Backlog(max_delay=0.01)
    backlog.run_soon()
    assert backlog._soon is None and backlog._deadline is None


async def test_a_job_added_after_an_early_run_still_waits_no_longer_than_max_delay() -> None:
    """The timer stays armed when the backlog runs early; whatever comes after is covered by it."""
    ran: list[str] = []
    backlog = Backlog(max_delay=0.05)
    backlog.add(ran.append, "first")
    backlog.run_soon()
    await asyncio.sleep(0)
    assert ran == ["first"]
    backlog.add(ran.append, "second")  # no run_soon follows: nobody starts a miner call
    await asyncio.sleep(0.2)
    assert ran == ["first", "second"]


async def test_timers_armed_one_per_delay_not_one_per_response() -> None:
    backlog = Backlog(max_delay=0.05)
    loop = asyncio.get_running_loop()
    armed = []
    real_call_at = loop.call_at

    def counting_call_at(*args, **kwargs):
        armed.append(args[0])
        return real_call_at(*args, **kwargs)

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    try:
        for n in range(100):  # one request after another: a response's books, then the next miner call
            backlog.add(lambda: None)
            backlog.run_soon()
            await asyncio.sleep(0)
    finally:
        del loop.call_at
    assert len(armed) == 1


async def test_a_failing_job_does_not_stop_the_rest() -> None:
    done: list[int] = []

    def broken() -> None:
        raise RuntimeError("a log that cannot be built")

    backlog = Backlog(max_delay=10.0)
    backlog.add(done.append, 1)
    backlog.add(broken)
    backlog.add(done.append, 2)
    backlog.run()
    assert done == [1, 2] and len(backlog) == 0


async def test_jobs_added_by_jobs_run_in_the_same_run() -> None:
    """A settled request's books may queue more books (a round forwarded, then its log)."""
    done: list[str] = []
    backlog = Backlog(max_delay=0.02)

    def first() -> None:
        done.append("first")
        backlog.add(done.append, "second")

    backlog.add(first)
    backlog.run_soon()
    await asyncio.sleep(0)
    assert done == ["first", "second"] and backlog._soon is None
    await asyncio.sleep(0.05)
    assert done == ["first", "second"]


async def test_close_at_shutdown_takes_everything_and_cancels_the_timer() -> None:
    done: list[int] = []
    backlog = Backlog(max_delay=0.02)
    for n in range(3):
        backlog.add(done.append, n)
    backlog.close()
    assert done == [0, 1, 2] and backlog._deadline._timer is None
    await asyncio.sleep(0.05)
    assert done == [0, 1, 2]  # the timer armed by the first add was cancelled, nothing ran twice

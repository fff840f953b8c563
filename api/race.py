"""Query several miners at once; the first with real content answers the client.

    calls = []
    winner = await race(candidates, fanout=3, max_attempts=6, launch=start, calls=calls)

The first ``fanout`` candidates start together (``api.fanout``). A miner that fails before its
first content chunk is replaced by the next candidate, so the client never
sees that failure; only when every attempt failed does the race raise a 502
(before any byte went to the client). The losers keep running to the end of
their answers, which are scored like the winner's.

With a ``Preference`` (the rated routing), the first racer to commit does not
win outright when a better-rated racer is expected to commit within
``patience`` of it (from that miner's own commit latency history): the race
waits that long at most and the best-rated committed racer wins. A fast,
worse miner then wins only against better miners that are slow or late.

``shadows`` (calls already started: a breaker's probe, exploration; see
``api.routing``) are recorded in ``calls``, but never answer the client and do not
count as attempts.

With ``run_alone`` (a whole answer) and a single candidate beside no shadow, there is
nobody to race and nobody to replace it with: the call runs in the request's own task
(``run_alone(miner)`` appends it to ``calls`` and returns it ended), which is the same
outcome as a race of one, a task, a wake-up and two turns of the loop cheaper (4% more
whole answers per second at c=1; docs/performance.md, round 10).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional, Sequence

from shared.schemas import MinerRecord

from .errors import ApiError
from .fanout import FanOut
from .miner_call import MinerCall


@dataclass(frozen=True)
class Preference:
    rating: Callable[[MinerRecord], float]
    expected: Callable[[int], Optional[float]]  # a uid's commit latency, an upper estimate (None: unknown)
    patience: float  # seconds after the first commit that a better-rated racer may still take


def describe_failures(calls: list[MinerCall]) -> str:
    return "; ".join(f"uid {c.miner.uid}: {c.error}" for c in calls if c.error)[:600]


async def race(
    candidates: list[MinerRecord],
    *,
    fanout: int,
    max_attempts: int,
    launch: Callable[[MinerRecord], MinerCall],
    calls: list[MinerCall],
    shadows: Sequence[MinerCall] = (),
    prefer: Optional[Preference] = None,
    run_alone: Optional[Callable[[MinerRecord], Awaitable[MinerCall]]] = None,
) -> MinerCall:
    """Return the winning call; every call started, shadows first, is appended to ``calls``."""
    if run_alone is not None and len(candidates) == 1 and not shadows:
        call = await run_alone(candidates[0])
        if call.first.result():
            return call
        raise ApiError(502, f"no miner could answer: {describe_failures(calls)}", "miners_failed")
    calls.extend(shadows)
    fan = FanOut(candidates, start=launch, signal=first_commit, width=fanout, max_attempts=max_attempts + len(shadows),
                 started=calls)
    fan.start()
    while fan.running:
        if len(fan.running) == 1:  # nobody to prefer over it, either: ``wait_for_better`` has no one to wait for
            done = await only_racer(fan)
        else:
            done = await fan.settled()
        winners = [call for call in done if call.first.result()]
        if winners:
            if prefer is not None:
                winners = await wait_for_better(winners, fan.running, prefer)
                return max(winners, key=lambda c: (prefer.rating(c.miner), -committed_at(c)))
            return min(winners, key=committed_at)
        for _ in done:  # each failed before its first commit: the next candidate instead
            fan.replace()
    raise ApiError(502, f"no miner could answer: {describe_failures(calls)}", "miners_failed")


async def only_racer(fan: FanOut) -> list[MinerCall]:
    """One racer in flight (``uids`` pins one miner, one candidate, or the others failed): wait for it alone.

    The same outcome as ``fan.settled()``, one loop turn and ``asyncio.wait``'s bookkeeping cheaper
    (``MinerCall.watch``); a failure is then replaced as usual, by the loop above.
    """
    signal, call = next(iter(fan.running.items()))
    if not signal.done():
        await call.watch()
    del fan.running[signal]
    return [call]


def first_commit(call: MinerCall) -> asyncio.Future:
    return call.first


def committed_at(call: MinerCall) -> float:
    return call.record.timings[0] if call.record.timings else float("inf")


async def wait_for_better(winners: list[MinerCall], running: dict[asyncio.Future, MinerCall],
                          prefer: Preference) -> list[MinerCall]:
    """``winners`` plus the better-rated racers that commit by when they are expected, within the patience."""
    deadline = time.monotonic() + prefer.patience
    while True:
        best = max(prefer.rating(c.miner) for c in winners)
        until = 0.0
        awaited = []
        for future, call in running.items():
            expected = prefer.expected(call.miner.uid)
            if expected is None or prefer.rating(call.miner) <= best:
                continue
            due = (call.record.started or time.monotonic()) + expected
            if due <= deadline:
                awaited.append(future)
                until = max(until, due)
        timeout = until - time.monotonic()
        if not awaited or timeout <= 0:
            return winners
        done, _ = await asyncio.wait(awaited, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            return winners
        for future in done:
            call = running.pop(future)
            if future.result():
                winners.append(call)

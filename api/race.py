"""Query several miners at once; the first with real content answers the client.

    calls = []
    winner = await race(candidates, fanout=3, max_attempts=6, launch=start, calls=calls)

The first ``fanout`` candidates start together. A miner that fails before its
first content chunk is replaced by the next candidate, so the client never
sees that failure; only when every attempt failed does the race raise a 502
(before any byte went to the client). The losers keep running to the end of
their answers, which are scored like the winner's.

``shadows`` (calls already started: a breaker's probe, exploration; see
``api.routing``) are recorded in ``calls``, but never answer the client and do not
count as attempts.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Sequence

from shared.schemas import MinerRecord

from .errors import ApiError
from .miner_call import MinerCall


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
) -> MinerCall:
    """Return the winning call; every call started, shadows first, is appended to ``calls``."""
    waiting = list(candidates)
    running: dict[asyncio.Future, MinerCall] = {}
    calls.extend(shadows)
    max_attempts += len(shadows)

    def start_next() -> None:
        call = launch(waiting.pop(0))
        calls.append(call)
        running[call.first] = call

    for _ in range(min(fanout, len(waiting))):
        start_next()
    while running:
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        winners = [running[f] for f in done if f.result()]
        if winners:
            return min(winners, key=lambda c: c.record.timings[0] if c.record.timings else float("inf"))
        for future in done:
            del running[future]
            if waiting and len(calls) < max_attempts:
                start_next()
    raise ApiError(502, f"no miner could answer: {describe_failures(calls)}", "miners_failed")

"""Rounds of miner calls that the chat modes beyond the plain race are built from.

    call = start_call(gateway, miner, payload)                 # one streamed MinerCall, settings' timeouts
    await all_answers(calls, timeout=30)                     # mixture: every miner's whole answer, bounded
    best = await first_answer(gateway, candidates, payload, fanout=3, timeout=20, calls=calls)   # a reasoning step
    forward_when_over(gateway, request_id, request, calls)     # to the validator once every call has ended

Miners always stream to the API (as in the plain race); these helpers wait
for whole answers instead of first chunks. A call cut short by a round's
deadline is stopped and recorded as a timeout, which the validator scores 0.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Optional

from shared.schemas import MinerChatRequest, MinerRecord, ScoringItem

from .errors import ApiError
from .meter import Meter, miners_finished
from .miner_call import MinerCall
from .race import describe_failures

if TYPE_CHECKING:
    from .gateway import Gateway


def start_call(gateway: Gateway, miner: MinerRecord, payload: bytes) -> MinerCall:
    settings = gateway.settings
    call = MinerCall(miner)
    call.start(gateway.client, payload, connect_timeout=settings.miner_connect_timeout,
               read_timeout=settings.miner_read_timeout, first_chunk_timeout=settings.first_chunk_timeout)
    return call


def finished_at(call: MinerCall) -> float:
    return call.record.timings[-1] if call.record.timings else float("inf")


async def stop_late(calls: list[MinerCall], why: str) -> None:
    late = [c for c in calls if c.task is not None and not c.task.done()]
    for call in late:
        call.task.cancel()
    await asyncio.gather(*(c.task for c in late), return_exceptions=True)
    for call in late:
        call.status, call.error = "timeout", why


async def all_answers(calls: list[MinerCall], timeout: float) -> None:
    """Until every call has ended, or ``timeout``: then the rest are stopped (status ``timeout``)."""
    tasks = [c.task for c in calls if c.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    await stop_late(calls, f"no whole answer within the round's {timeout:.1f}s")


async def first_answer(gateway: Gateway, candidates: list[MinerRecord], payload: bytes, *, fanout: int, timeout: float,
                       calls: list[MinerCall]) -> MinerCall:
    """The first call to finish a whole answer. ``fanout`` start at once; a failure is replaced by the
    next candidate (up to ``MAX_ATTEMPTS``). The others go on, for scoring; every call is added to ``calls``.
    502 when every attempt failed, 504 when none finished in time (those still running are then stopped)."""
    deadline = time.monotonic() + timeout
    waiting = list(candidates)
    running: dict[asyncio.Task, MinerCall] = {}
    limit = max(gateway.settings.max_attempts, fanout)

    def start_next() -> None:
        call = start_call(gateway, waiting.pop(0), payload)
        calls.append(call)
        running[call.task] = call

    for _ in range(min(fanout, len(waiting))):
        start_next()
    while running:
        done, _ = await asyncio.wait(running, timeout=max(0.0, deadline - time.monotonic()),
                                     return_when=asyncio.FIRST_COMPLETED)
        if not done:
            await stop_late(list(running.values()), "no whole answer in time")
            raise ApiError(504, f"no miner finished an answer within {timeout:.1f}s", "miners_timeout")
        finished = sorted((running.pop(task) for task in done), key=finished_at)
        for call in finished:
            if call.status == "ok":
                return call
        for _ in finished:
            if waiting and len(calls) < limit:
                start_next()
    raise ApiError(502, f"no miner could answer: {describe_failures(calls)}", "miners_failed")


def forward_when_over(gateway: Gateway, request_id: str, request: MinerChatRequest, calls: list[MinerCall],
                      meter: Optional[Meter] = None) -> None:
    """Queue every call's answer for the validator, as one item, once the last call has ended; with
    ``meter``, the calls are also in the client request's log (one row per miner queried)."""
    if meter is not None:
        meter.query(calls)

    async def wait_then_submit() -> None:
        try:
            await asyncio.gather(*(c.task for c in calls if c.task is not None), return_exceptions=True)
            if calls:
                gateway.forwarder.submit(ScoringItem(request_id=request_id, source="organic", task=request.task,
                                                   created_at=time.time(), request=request,
                                                   responses=[c.response_record() for c in calls]))
        finally:
            if meter is not None:
                miners_finished(meter, gateway)

    gateway.keep(wait_then_submit())

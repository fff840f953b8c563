"""Rounds of miner calls that the chat modes beyond the plain race are built from.

    call = start_call(gateway, miner, payload, max_tokens)   # one streamed MinerCall, settings' timeouts
    await all_answers(calls, timeout=30)                     # mixture: every miner's whole answer, bounded
    best = await first_answer(gateway, candidates, payload, max_tokens=256, fanout=3, timeout=20,
                              calls=calls)                   # a reasoning step
    forward_when_over(gateway, request_id, request, calls)   # to the validator once every call has ended

Miners always stream to the API (as in the plain race); these helpers wait
for whole answers instead of first chunks. A call cut short by a round's
deadline is stopped and recorded as a timeout, which the validator scores 0.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Optional

from shared.schemas import MinerChatRequest, MinerRecord

from .errors import ApiError
from .fanout import FanOut
from .meter import Meter, query
from .miner_call import MinerCall
from .race import describe_failures

if TYPE_CHECKING:
    from .gateway import Gateway


def start_call(gateway: Gateway, miner: MinerRecord, payload: bytes, max_tokens: int) -> MinerCall:
    """A round's call: mixture's first round and reasoning's steps ask each miner for one choice, of at most
    ``max_tokens`` tokens."""
    call = MinerCall(miner, choices=1, max_tokens=max_tokens, relayed=False)  # read whole, never relayed
    call.start(gateway.client, payload, gateway.call_limits)
    return call


def ended(call: MinerCall) -> asyncio.Task:
    return call.task


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


async def first_answer(gateway: Gateway, candidates: list[MinerRecord], payload: bytes, *, max_tokens: int,
                       fanout: int, timeout: float, calls: list[MinerCall]) -> MinerCall:
    """The first call to finish a whole answer. ``fanout`` start at once; a failure is replaced by the
    next candidate (up to ``MAX_ATTEMPTS``). The others go on, for scoring; every call is added to ``calls``.
    502 when every attempt failed, 504 when none finished in time (those still running are then stopped)."""
    deadline = time.monotonic() + timeout
    fan = FanOut(candidates, start=lambda miner: start_call(gateway, miner, payload, max_tokens), signal=ended,
                 width=fanout, max_attempts=max(gateway.settings.max_attempts, fanout), started=calls)
    fan.start()
    while fan.running:
        finished = sorted(await fan.settled(timeout=max(0.0, deadline - time.monotonic())), key=finished_at)
        if not finished:
            await stop_late(list(fan.running.values()), "no whole answer in time")
            raise ApiError(504, f"no miner finished an answer within {timeout:.1f}s", "miners_timeout")
        for call in finished:
            if call.status == "ok":
                return call
        for _ in finished:
            fan.replace()
    raise ApiError(502, f"no miner could answer: {describe_failures(calls)}", "miners_failed")


def forward_when_over(gateway: Gateway, request_id: str, request: MinerChatRequest, calls: list[MinerCall],
                      meter: Optional[Meter] = None) -> None:
    """Queue every call's answer for the validator, as one item, once the last call has ended; with
    ``meter``, the calls are also in the client request's log (one row per miner queried), and go once
    the response is over (``api.meter.query``)."""
    if meter is not None:
        query(gateway, meter, calls, request_id, request)
    else:
        gateway.forwarder.submit_when_done(calls, request_id, request)

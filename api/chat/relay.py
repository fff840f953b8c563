"""The chat core's second half: the winner's answer to the client.

    answer = await complete(winner, calls)                    # a whole answer (another miner's if it broke)
    events = relay(winner, meter, model=…, …)                 # or its chunks, as typed events (api.chat.events)

Every miner's answer (losers included: the validator scores them all) goes to the validator through the
meter's rounds (``api.meter.query``), once the response is over and the last miner has ended.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Optional

from ..errors import ApiError
from ..meter import Meter
from ..miner_call import END, OVERRUN, MinerCall
from ..race import describe_failures
from ..responses import client_choices, usage_of
from .events import DONE, Delta, Event, Failed, Usage


async def complete(winner: MinerCall, calls: list[MinerCall]) -> MinerCall:
    """The winner's whole answer; if it broke mid-way, another miner's complete one."""
    if winner.task is not None and not winner.task.done():  # no task: it ran in the request's (``api.race``)
        await asyncio.wait([winner.task])
    if winner.status == "ok":
        return winner
    pending = {c.task: c for c in calls if c is not winner and c.task is not None and not c.shadow}
    while pending:  # the first other miner to finish a whole answer, not the first one started
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            call = pending.pop(task)
            if call.status == "ok":
                return call
    raise ApiError(502, f"no miner finished its answer: {describe_failures(calls)}", "miners_failed")


async def relay(winner: MinerCall, meter: Meter, *, model: Optional[str], include_usage: bool,
                prompt_tokens: int) -> AsyncIterator[list[Event]]:
    """Relay the winner's chunks as events (``api.chat.events``); a failure now can only be told in-band.

    Charged when the answer completes, or when the client leaves part-way (it
    had what it read); not when the miner broke mid-stream. A client that reads so much slower than the miner
    sends that more than ``STREAM_RELAY_BUFFER_BYTES`` of the stream wait for it (``Relay``) is treated as one
    that left: its stream ends with an error event, and it is charged for what it read.
    """
    chunks_of = winner.become_winner()
    shown_model: Optional[str] = None  # the model the client is shown: ours, else the miner's first chunk's
    completed = False
    try:
        ended = False
        while not ended:
            chunks = await chunks_of.take()  # chunks that arrived together leave in one write
            if chunks[0] is OVERRUN:
                message = (f"the client read the stream slower than the miner sent it: more than "
                           f"{chunks_of.limit} bytes of it waited; the stream was stopped")
                meter.client_left(message)
                yield [Failed(message, 408, "client_too_slow"), DONE]
                return
            if chunks[-1] is END:  # END is always the last thing queued
                ended = True
                chunks.pop()
            events: list[Event] = []
            for shown in chunks:  # each chunk's choices as ``StreamRecord.take`` kept them for the client
                if shown_model is None:
                    shown_model = model or winner.record.model or "default"
                events.append(Delta(client_choices(shown), winner, shown_model))
            if events and not ended:
                yield events
        if winner.status != "ok":  # the end of the stream leaves with the last chunks, in one write
            meter.miner_failed(f"miner uid {winner.miner.uid}: {winner.error}")
            events.append(Failed(f"miner uid {winner.miner.uid} failed mid-stream: {winner.error}"))
        else:
            meter.answered()
            if include_usage:
                events.append(Usage(usage_of(winner, prompt_tokens), winner,
                                    model or winner.record.model or "default"))
        events.append(DONE)
        yield events
        completed = True
    finally:
        if not completed:
            meter.client_left()
        if winner.task is not None and not winner.task.done():
            winner.task.cancel()  # the client went away: stop the miner's work

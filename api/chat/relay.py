"""The chat core's second half: the winner's answer to the client.

    answer = await complete(winner, calls)                    # a whole answer (another miner's if it broke)
    events = relay(winner, meter, request_id=…, …)            # or its chunks, as SSE, charged as they end

Every miner's answer (losers included: the validator scores them all) goes to the validator through the
meter's rounds (``api.meter.query``), once the response is over and the last miner has ended.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from ..errors import ApiError
from ..meter import Meter
from ..miner_call import END, MinerCall
from ..race import describe_failures
from ..responses import SSE_DONE, ChunkEvents, error_event, usage_event


async def complete(winner: MinerCall, calls: list[MinerCall]) -> MinerCall:
    """The winner's whole answer; if it broke mid-way, another miner's complete one."""
    if not winner.task.done():
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


async def relay(winner: MinerCall, meter: Meter, *, request_id: str, created: int, model, include_usage: bool,
                prompt_tokens: int) -> AsyncIterator[bytes]:
    """Relay the winner's chunks; a failure now can only be told in-band.

    Charged when the answer completes, or when the client leaves part-way (it
    had what it read); not when the miner broke mid-stream.
    """
    queue = winner.become_winner()
    render = ChunkEvents(winner, request_id=request_id, created=created, model=model)
    completed = False
    try:
        ended = False
        while not ended:
            chunks = [await queue.get()]
            while not queue.empty():  # chunks that arrived together leave in one write
                chunks.append(queue.get_nowait())
            if chunks[-1] is END:  # END is always the last thing queued
                ended = True
                chunks.pop()
            events = [render.event(chunk) for chunk in chunks if chunk.get("choices")]
            if events and not ended:
                yield b"".join(events)
        if winner.status != "ok":  # the end of the stream leaves with the last chunks, in one write
            meter.miner_failed(f"miner uid {winner.miner.uid}: {winner.error}")
            events.append(error_event(f"miner uid {winner.miner.uid} failed mid-stream: {winner.error}"))
        else:
            meter.answered()
            if include_usage:
                events.append(usage_event(winner, request_id=request_id, created=created, model=model,
                                          prompt_tokens=prompt_tokens))
        yield b"".join(events) + SSE_DONE
        completed = True
    finally:
        if not completed:
            meter.client_left()
        if winner.task is not None and not winner.task.done():
            winner.task.cancel()  # the client went away: stop the miner's work

"""``POST /v1/chat/completions``: OpenAI-compatible, streamed or not, answered by miners.

Mixture of miners (``api.mixture``) runs its first round here and then
races its aggregators like any request; test-time inference
(``api.reasoning``) answers on its own. Prompts are screened first
(``api.moderation``), when a moderation endpoint is configured.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from shared.schemas import MinerChatRequest, MinerRecord, ScoringItem

from ..access import admit, require_allowed
from ..errors import ApiError
from ..keys import KeyRecord
from ..meter import Meter, meter_of, miners_finished
from ..miner_call import END, MinerCall
from ..mixture import first_round
from ..moderation import message_texts, screen
from ..race import describe_failures, race
from ..reasoning import serve_reasoning
from ..responses import SSE_DONE, chunk_event, completion_object, error_event, prompt_words, usage_event
from ..schemas import ChatCompletionRequest
from ..selection import select_candidates

router = APIRouter()

def strategy_of(body: ChatCompletionRequest) -> str:
    return "uids" if body.uids is not None else "top_n" if body.top_n is not None else "sample"


async def forward_when_done(state, meter: Meter, calls: list[MinerCall], request_id: str,
                            request: MinerChatRequest) -> None:
    """Wait for every miner of the request to finish, then queue their answers for the validator and the log."""
    await asyncio.gather(*(c.task for c in calls if c.task is not None), return_exceptions=True)
    if calls:
        state.forwarder.submit(ScoringItem(request_id=request_id, source="organic", task=request.task,
                                           created_at=time.time(), request=request,
                                           responses=[c.response_record() for c in calls]))
    miners_finished(meter, state)


def keep_running(request: Request, coroutine) -> None:
    tasks: set = request.app.state.background
    task = asyncio.create_task(coroutine)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, key: KeyRecord = Depends(admit)):
    state = request.app.state
    settings = state.settings
    meter = meter_of(request)
    prompt_tokens = prompt_words(body.messages)
    meter.describe(task=body.task, strategy=strategy_of(body), model=body.model, stream=body.stream,
                   prompt_tokens=prompt_tokens)
    require_allowed(key, task=body.task, model=body.requested_model)
    await screen(request, message_texts(body.messages))
    if state.directory.directory is None:
        raise ApiError(503, "no miner directory yet: the validator has not answered", "directory_unavailable")
    candidates, width = select_candidates(
        state.directory.directory, task=body.task, model=body.requested_model, uids=body.uids,
        top_n=body.top_n, top_pool=settings.top_pool, rng=state.rng,
    )
    miner_request = body.to_miner_request()
    request_id = meter.request_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.wants_reasoning:
        response = await serve_reasoning(body, miner_request, candidates, width, state=state,
                                         request_id=request_id, created=created)
        meter.charge = True  # a miner answered (serve_reasoning fails before the first byte otherwise)
        return response
    if body.wants_mixture:  # the first round here; the aggregation round is the race below
        miner_request, candidates, width = await first_round(state, miner_request, candidates, width,
                                                             request_id=request_id)
    if not body.stream:  # a whole answer for the client: ask miners for whole answers too
        miner_request = miner_request.model_copy(update={"stream": False})
    payload = miner_request.model_dump_json(exclude_none=True).encode()

    def launch(miner: MinerRecord) -> MinerCall:
        call = MinerCall(miner)
        call.start(state.client, payload, connect_timeout=settings.miner_connect_timeout,
                   read_timeout=settings.miner_read_timeout, first_chunk_timeout=settings.first_chunk_timeout,
                   stream=miner_request.stream)
        return call

    calls: list[MinerCall] = []
    meter.calls = calls
    try:
        winner = await race(candidates, fanout=width or settings.fanout,
                            max_attempts=max(settings.max_attempts, width), launch=launch, calls=calls)
    finally:
        keep_running(request, forward_when_done(state, meter, calls, request_id, miner_request))

    if body.stream:
        meter.winner = winner
        return StreamingResponse(
            relay(winner, meter, request_id=request_id, created=created, model=body.model,
                  include_usage=body.include_usage, prompt_tokens=prompt_tokens),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Request-Id": request_id},
        )
    answer = await complete(winner, calls)
    meter.winner, meter.charge = answer, True
    return JSONResponse(completion_object(answer, request_id=request_id, created=created, model=body.model,
                                          prompt_tokens=prompt_tokens), headers={"X-Request-Id": request_id})


async def complete(winner: MinerCall, calls: list[MinerCall]) -> MinerCall:
    """The winner's whole answer; if it broke mid-way, another miner's complete one."""
    await asyncio.wait([winner.task])
    if winner.status == "ok":
        return winner
    pending = {c.task: c for c in calls if c is not winner and c.task is not None}
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
            events = [chunk_event(chunk, winner, request_id=request_id, created=created, model=model)
                      for chunk in chunks if chunk.get("choices")]
            if events:
                yield b"".join(events)
        if winner.status != "ok":
            meter.outcome, meter.error = "miner_error", f"miner uid {winner.miner.uid}: {winner.error}"
            yield error_event(f"miner uid {winner.miner.uid} failed mid-stream: {winner.error}")
        else:
            meter.charge = True
            if include_usage:
                yield usage_event(winner, request_id=request_id, created=created, model=model,
                                  prompt_tokens=prompt_tokens)
        yield SSE_DONE
        completed = True
    finally:
        if not completed and meter.outcome is None:
            meter.outcome, meter.charge = "client_closed", True
        if winner.task is not None and not winner.task.done():
            winner.task.cancel()  # the client went away: stop the miner's work

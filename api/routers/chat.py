"""``POST /v1/chat/completions``: OpenAI-compatible, streamed or not, answered by miners.

Mixture of miners (``api.mixture``) runs its first round here and then
races its aggregators like any request; test-time inference
(``api.reasoning``) answers on its own. Prompts are screened first
(``api.moderation``), when a moderation endpoint is configured.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from shared.request_ids import new_id
from shared.schemas import MinerChatRequest, MinerRecord, ScoringItem, key_id

from ..access import admit, require_allowed
from ..admission import admit_units, chat_units
from ..errors import ApiError
from ..json_response import FastJSONResponse
from ..keys import KeyRecord
from ..meter import Meter, meter_of, miners_finished
from ..miner_call import END, MinerCall
from ..mixture import first_round
from ..model_names import resolve_model
from ..moderation import message_texts, screen
from ..race import describe_failures, race
from ..reasoning import serve_reasoning
from ..responses import SSE_DONE, ChunkEvents, completion_object, error_event, prompt_words, usage_event
from ..schemas import ChatCompletionRequest

router = APIRouter()

def strategy_of(body: ChatCompletionRequest) -> str:
    return "uids" if body.uids is not None else "top_n" if body.top_n is not None else "sample"


def forward_when_done(state, meter: Meter, calls: list[MinerCall], request_id: str,
                      request: MinerChatRequest) -> None:
    """Once every miner of the request has finished, queue their answers for the validator and the log.

    Queued once the client has its answer, never before: building the scoring item and the log is
    work the client need not wait for. Miners still running are waited for by a background task;
    when all have finished already (a whole answer from one miner), no task is needed.
    """

    def forward() -> None:
        if calls:
            state.forwarder.submit(ScoringItem(request_id=request_id, source="organic", task=request.task,
                                               created_at=time.time(), request=request,
                                               responses=[c.response_record() for c in calls],
                                               key_id=key_id(meter.key.id) if meter.key else None))
        miners_finished(meter, state)

    running = [c.task for c in calls if c.task is not None and not c.task.done()]
    if not running:
        meter.after_response(forward)
        return

    async def wait_then_forward() -> None:
        await asyncio.gather(*running, return_exceptions=True)
        meter.after_response(forward)

    keep_running(state, wait_then_forward())


def keep_running(state, coroutine) -> None:
    tasks: set = state.background
    task = asyncio.create_task(coroutine)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, key: KeyRecord = Depends(admit)):
    state = request.app.state
    settings = state.settings
    body = resolve_model(body, state, key)  # aliases, model@uid pins, UNKNOWN_MODEL
    meter = meter_of(request)
    prompt_tokens = prompt_words(body.messages)
    meter.describe(task=body.task, strategy=strategy_of(body), model=body.model, stream=body.stream,
                   prompt_tokens=prompt_tokens)
    require_allowed(key, task=body.task, model=body.requested_model)
    await screen(request, message_texts(body.messages))
    if state.directory.directory is None:
        raise ApiError(503, "no miner directory yet: the validator has not answered", "directory_unavailable")
    directory = state.directory.directory
    routing = state.routing
    candidates, width = routing.select(directory, task=body.task, model=body.requested_model, uids=body.uids,
                                       top_n=body.top_n, rng=state.rng)
    pinned = body.uids is not None or body.top_n is not None
    await admit_units(request, key, chat_units(body, width if pinned or not body.wants_mixture else 0, settings,
                                               len(candidates)))
    # A whole answer for the client: miners are asked for whole answers too (mixture and test-time
    # inference stream their own rounds, and decide below).
    miner_request = body.to_miner_request(stream=body.stream or body.wants_mixture or body.wants_reasoning)
    request_id = meter.request_id = new_id("chatcmpl")
    created = int(time.time())
    if body.wants_reasoning:
        response = await serve_reasoning(body, miner_request, candidates, width, state=state,
                                         request_id=request_id, created=created, meter=meter)
        meter.charge = True  # a miner answered (serve_reasoning fails before the first byte otherwise)
        return response
    if body.wants_mixture:  # the first round here; the aggregation round is the race below
        pinned = body.uids is not None or body.top_n is not None  # else MIXTURE_SIZE of the ranked candidates
        miner_request, candidates, width = await first_round(state, miner_request, candidates,
                                                             width if pinned else 0, request_id=request_id,
                                                             meter=meter)
    if not body.stream and miner_request.stream:  # after mixture's first round: whole answers from here
        miner_request = miner_request.model_copy(update={"stream": False})
    payload = miner_request.model_dump_json(exclude_none=True).encode()

    def launch(miner: MinerRecord) -> MinerCall:
        call = MinerCall(miner, commit_chunks=routing.commit_chunks if miner_request.stream else 1)
        call.start(state.client, payload, connect_timeout=settings.miner_connect_timeout,
                   read_timeout=settings.miner_read_timeout, first_chunk_timeout=settings.first_chunk_timeout,
                   stream=miner_request.stream)
        return routing.watch(call)

    def launch_shadow(miner: MinerRecord) -> MinerCall:
        call = launch(miner)
        call.shadow = True
        return call

    fanout = width or settings.fanout
    plain = body.uids is None and body.top_n is None and not body.wants_mixture
    shadows = routing.shadows(directory, body.task, body.requested_model, candidates[:fanout], state.rng) if plain \
        else ()
    calls: list[MinerCall] = []
    meter.query(calls)
    try:
        winner = await race(candidates, fanout=fanout, max_attempts=max(settings.max_attempts, width),
                            launch=launch, calls=calls, shadows=[launch_shadow(m) for m in shadows],
                            prefer=routing.preference(directory) if plain else None)
    finally:
        forward_when_done(state, meter, calls, request_id, miner_request)

    if body.stream:
        meter.answer(winner)
        routing.served(directory, body.task, body.requested_model, winner.miner)
        return StreamingResponse(
            relay(winner, meter, request_id=request_id, created=created, model=body.model,
                  include_usage=body.include_usage, prompt_tokens=prompt_tokens),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Request-Id": request_id},
        )
    answer = await complete(winner, calls)
    meter.answer(answer)
    meter.charge = True
    routing.served(directory, body.task, body.requested_model, answer.miner)
    return FastJSONResponse(completion_object(answer, request_id=request_id, created=created, model=body.model,
                                          prompt_tokens=prompt_tokens), headers={"X-Request-Id": request_id})


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
            meter.outcome, meter.error = "miner_error", f"miner uid {winner.miner.uid}: {winner.error}"
            events.append(error_event(f"miner uid {winner.miner.uid} failed mid-stream: {winner.error}"))
        else:
            meter.charge = True
            if include_usage:
                events.append(usage_event(winner, request_id=request_id, created=created, model=model,
                                          prompt_tokens=prompt_tokens))
        yield b"".join(events) + SSE_DONE
        completed = True
    finally:
        if not completed and meter.outcome is None:
            meter.outcome, meter.charge = "client_closed", True
        if winner.task is not None and not winner.task.done():
            winner.task.cancel()  # the client went away: stop the miner's work

"""One chat core: select, race, relay, settle. Every chat entry of the API is an adapter over ``answer``.

    outcome = await answer(gateway, key, body, meter)

In order: the model name resolved (aliases, ``model@uid``), the key's allowed tasks and models, the
prompt screened (``api.moderation``), candidates selected (``api.routing_service``), the request's
units of miner work admitted (``api.admission``), then one of three modes:

- plain: ``fanout`` miners race (``api.race``); the first to commit answers, the rest go on for scoring;
- mixture (``api.mixture``): a first round of whole answers, then the race among aggregators;
- test-time inference (``api.reasoning``): steps, each the first whole answer of a small race.

The meter (``api.meter``) learns every round of miners as it starts and the miner that answered, so the
request's log has one row per miner queried; what miners answered goes to the validator once the response
is over and they have all finished (``api.meter.query``, ``ScoringForwarder.submit_when_done``). An
``ApiError`` raised here happens before the first byte, so the adapter sends it as a real HTTP error.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from shared.request_ids import new_id
from shared.schemas import MinerRecord

from ..access import require_allowed
from ..admission import admit_units, chat_units
from ..errors import ApiError
from ..keys import KeyRecord
from ..meter import Meter, query
from ..miner_call import MinerCall
from ..mixture import first_round
from ..model_names import resolve_model
from ..moderation import message_texts, screen
from ..race import race
from ..reasoning import serve_reasoning
from ..responses import completion_object, prompt_words
from ..schemas import ChatCompletionRequest
from .outcome import Outcome
from .relay import complete, relay

if TYPE_CHECKING:
    from ..gateway import Gateway


def strategy_of(body: ChatCompletionRequest) -> str:
    return "uids" if body.uids is not None else "top_n" if body.top_n is not None else "sample"


async def answer(gateway: Gateway, key: KeyRecord, body: ChatCompletionRequest, meter: Meter) -> Outcome:
    settings = gateway.settings
    body = resolve_model(body, gateway, key)  # aliases, model@uid pins, UNKNOWN_MODEL
    prompt_tokens = prompt_words(body.messages)
    meter.describe(task=body.task, strategy=strategy_of(body), model=body.model, stream=body.stream,
                   prompt_tokens=prompt_tokens)
    require_allowed(key, task=body.task, model=body.requested_model)
    await screen(gateway.moderator, message_texts(body.messages))
    if gateway.directory.directory is None:
        raise ApiError(503, "no miner directory yet: the validator has not answered", "directory_unavailable")
    directory = gateway.directory.directory
    routing = gateway.routing
    candidates, width = routing.select(directory, task=body.task, model=body.requested_model, uids=body.uids,
                                       top_n=body.top_n, rng=gateway.rng)
    pinned = body.uids is not None or body.top_n is not None
    await admit_units(gateway, meter, key, chat_units(body, width if pinned or not body.wants_mixture else 0,
                                                      settings, len(candidates)))
    # A whole answer for the client: miners are asked for whole answers too (mixture and test-time
    # inference stream their own rounds, and decide below).
    miner_request = body.to_miner_request(stream=body.stream or body.wants_mixture or body.wants_reasoning)
    request_id = meter.request_id = new_id("chatcmpl")
    created = int(time.time())
    if body.wants_reasoning:
        outcome = await serve_reasoning(body, miner_request, candidates, width, gateway=gateway,
                                        request_id=request_id, created=created, meter=meter)
        meter.answered()  # a miner answered (serve_reasoning fails before the first byte otherwise)
        return outcome
    if body.wants_mixture:  # the first round here; the aggregation round is the race below
        miner_request, candidates, width = await first_round(gateway, miner_request, candidates,
                                                             width if pinned else 0, request_id=request_id,
                                                             meter=meter)
    if not body.stream and miner_request.stream:  # after mixture's first round: whole answers from here
        miner_request = miner_request.model_copy(update={"stream": False})
    payload = miner_request.model_dump_json(exclude_none=True).encode()

    def launch(miner: MinerRecord) -> MinerCall:
        call = MinerCall(miner, commit_chunks=routing.commit_chunks if miner_request.stream else 1,
                         choices=miner_request.n, max_tokens=miner_request.sampling_parameters.max_new_tokens,
                         relayed=body.stream)
        call.start(gateway.client, payload, gateway.call_limits, stream=miner_request.stream)
        gateway.backlog.run_soon()  # earlier responses' books, while this miner works (``api.backlog``)
        return routing.watch(call)

    async def run_alone(miner: MinerRecord) -> MinerCall:
        """A whole answer's lone racer, in this task (``api.race``); its outcome is observed with the books."""
        call = MinerCall(miner, choices=miner_request.n)
        calls.append(call)
        running = call.run(gateway.client, payload, gateway.call_limits, stream=False)
        gateway.backlog.run_soon()  # as in ``launch``: it runs once the request is on its way
        try:
            await running
        finally:
            gateway.backlog.add(routing.observe_ended, call)
        return call

    def launch_shadow(miner: MinerRecord) -> MinerCall:
        call = launch(miner)
        call.shadow = True
        return call

    fanout = width or settings.fanout
    plain = body.uids is None and body.top_n is None and not body.wants_mixture
    shadows = routing.shadows(directory, body.task, body.requested_model, candidates[:fanout], gateway.rng) \
        if plain else ()
    calls: list[MinerCall] = []
    query(gateway, meter, calls, request_id, miner_request, with_key=True)  # logged and forwarded, won or not
    winner = await race(candidates, fanout=fanout, max_attempts=max(settings.max_attempts, width),
                        launch=launch, calls=calls, shadows=[launch_shadow(m) for m in shadows],
                        prefer=routing.preference(directory) if plain else None,
                        run_alone=None if miner_request.stream else run_alone)

    if body.stream:
        for call in calls:
            if call is not winner:
                call.lost()  # its answer is still read and scored; its chunks will never reach the client
        meter.won_by(winner)
        gateway.backlog.add(routing.served, directory, body.task, body.requested_model, winner.miner)
        return Outcome(request_id, created=created, events=relay(
            winner, meter, model=body.model, include_usage=body.include_usage, prompt_tokens=prompt_tokens))
    whole = await complete(winner, calls)
    meter.won_by(whole)
    meter.answered()
    # the served band is a metric: counted with the books, not before the answer's bytes (``api.backlog``)
    gateway.backlog.add(routing.served, directory, body.task, body.requested_model, whole.miner)
    return Outcome(request_id, completion=completion_object(whole, request_id=request_id, created=created,
                                                            model=body.model, prompt_tokens=prompt_tokens))

"""``POST /v1/chat/completions``: a signed ``MinerChatRequest`` in, OpenAI's format out.

The body is parsed from the raw bytes the signature covered. Errors found
before the first byte (bad body, unserved task or model, an upstream that
refuses) are real HTTP errors; one that happens mid-stream becomes a
``data: {"error": …}`` event followed by ``data: [DONE]``.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from loguru import logger
from pydantic import ValidationError

from shared.auth import Caller
from shared.schemas import WEB_RETRIEVAL_TASK, MinerChatRequest

from . import openai_wire as wire
from .access import verified_caller
from .backends.base import ChoiceStream
from .errors import MinerError, describe_validation_errors
from .retrieval import chat_results
from .settings import MinerSettings
from .sse import DONE, CutConnection, EventStreamResponse, sse

router = APIRouter()
_END = object()


def parse_request(raw: bytes) -> MinerChatRequest:
    try:
        return MinerChatRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise MinerError(422, describe_validation_errors(exc.errors())) from None


def served_model(body: MinerChatRequest, settings: MinerSettings) -> str:
    """The model to answer with (the first advertised one if none is asked for), or a 400."""
    if body.task not in settings.tasks:
        raise MinerError(400, f"this miner does not serve task {body.task!r}", code="task_not_served")
    if body.model is None:
        return settings.models[0]
    if body.model not in settings.models:
        raise MinerError(400, f"this miner does not serve model {body.model!r}", code="model_not_found")
    return body.model


def wants_usage(body: MinerChatRequest) -> bool:
    options = (body.model_extra or {}).get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def total_usage(streams: list[ChoiceStream]) -> dict[str, int]:
    """The prompt counted once (as OpenAI does for ``n`` > 1), completions summed."""
    return wire.usage(streams[0].outcome.prompt_tokens, sum(s.outcome.completion_tokens for s in streams))


async def close_all(streams: list[ChoiceStream]) -> None:
    for stream in streams:
        close = getattr(stream.pieces, "aclose", None)
        if close is not None:
            await close()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, caller: Caller = Depends(verified_caller)) -> Response:
    body = parse_request(await request.body())
    state = request.app.state
    model = served_model(body, state.settings)
    logger.debug("chat from {}: model={} n={} stream={}", caller.hotkey_ss58, model, body.n, body.stream)
    state.behaviour.check(body, model)
    if body.task == WEB_RETRIEVAL_TASK:
        streams = await chat_results(request, body)
    else:
        streams = [state.behaviour.wrap(state.backend.open(body, model, i), body, model, i) for i in range(body.n)]
    if body.stream:
        return await stream_chat(streams, model, wants_usage(body))
    return await complete_chat(streams, model)


async def complete_chat(streams: list[ChoiceStream], model: str) -> JSONResponse:
    choices = []
    try:
        for stream in streams:
            text = "".join([piece async for piece in stream.pieces])
            choices.append((text, stream.outcome.finish_reason))
    except CutConnection:
        raise MinerError(500, "the miner died while generating", code="broken_miner") from None
    finally:
        await close_all(streams)
    body = wire.completion(wire.new_completion_id(), wire.now(), model, choices, total_usage(streams))
    return JSONResponse(body)


async def stream_chat(streams: list[ChoiceStream], model: str, include_usage: bool) -> EventStreamResponse:
    try:  # the first piece before any byte: an upstream that fails here gets a real HTTP error
        first = await anext(streams[0].pieces, _END)
    except BaseException:
        await close_all(streams)
        raise
    return EventStreamResponse(chunk_events(streams, first, model, include_usage))


async def chunk_events(
    streams: list[ChoiceStream], first: Any, model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    completion_id, created = wire.new_completion_id(), wire.now()
    try:
        for index, stream in enumerate(streams):
            role = {"role": "assistant"}
            pieces = _prepend(first, stream.pieces) if index == 0 else stream.pieces
            async with aclosing(pieces):
                async for piece in pieces:
                    yield sse(wire.chunk(completion_id, created, model, index, {**role, "content": piece}))
                    role = {}
            if role:  # nothing was generated: still say who spoke
                yield sse(wire.chunk(completion_id, created, model, index, {**role, "content": ""}))
            yield sse(wire.chunk(completion_id, created, model, index, {}, stream.outcome.finish_reason))
        if include_usage:
            yield sse(wire.usage_chunk(completion_id, created, model, total_usage(streams)))
    except MinerError as exc:
        yield sse(exc.body())
    except CutConnection:
        raise
    except Exception:
        logger.exception("chat stream failed")
        yield sse(MinerError(500, "the miner failed mid-stream").body())
    finally:
        await close_all(streams)
    yield DONE


async def _prepend(first: Any, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    if first is _END:
        return
    yield first
    async for piece in rest:
        yield piece

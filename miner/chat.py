"""``POST /v1/chat/completions``: a signed ``MinerChatRequest`` in, OpenAI's format out.

This is the miner's hot path, so it is a plain ASGI endpoint rather than a
FastAPI route: ``miner.app`` hands it these requests before routing, which
skips the middleware and dependency machinery that cost about a third of a
request's CPU. It checks the same things in the same order (signature and
caller, body, task and model, behaviour) and answers the same errors.

The body is parsed from the raw bytes the signature covered. Errors found
before the first byte (bad signature, bad body, unserved task or model, an
upstream that refuses) are real HTTP errors; one that happens mid-stream
becomes a ``data: {"error": …}`` event followed by ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any, AsyncIterator

from fastapi import HTTPException
from loguru import logger
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from shared.asgi import BodyTooLarge, ClientGone, DisconnectWatch, header_map, read_body, send_json
from shared.auth import declared_length, scope_target
from shared.schemas import WEB_RETRIEVAL_TASK, MinerChatRequest

from . import openai_wire as wire
from .backends.base import ChoiceStream
from .errors import MinerError, describe_validation_errors
from .retrieval import chat_results
from .settings import MinerSettings
from .sse import DONE, CutConnection, sse

PATH = "/v1/chat/completions"
EVENT_STREAM_HEADERS = [
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]
_END = object()


class ChatCompletions:
    """The ASGI endpoint. It reads ``app.state`` per request: the app's lifespan fills it."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.app.state
        try:
            headers = header_map(scope)
            state.verifier.check_headers(headers)  # before a byte of the body: a stranger's body is never read
            limit = state.verifier.max_body_bytes
            declared_length(headers, limit)
            raw = await read_body(receive, max_bytes=limit)
            caller = state.verifier.verify(scope["method"], scope_target(scope), headers, raw)
            body = parse_request(raw)
            model = served_model(body, state.settings)
            logger.debug("chat from {}: model={} n={} stream={}", caller.hotkey_ss58, model, body.n, body.stream)
            state.behaviour.check(body, model)
            if body.task == WEB_RETRIEVAL_TASK:
                streams = await chat_results(state, body)
            else:
                streams = [state.behaviour.wrap(state.backend.open(body, model, i), body, model, i)
                           for i in range(body.n)]
            if not body.stream:
                await send_json(send, 200, await complete_chat(streams, model))
                return
            first = await first_batch(streams)
        except ClientGone:
            return
        except BodyTooLarge:
            error = MinerError(413, f"request body is larger than {state.verifier.max_body_bytes} bytes")
            await send_json(send, 413, error.body(), close=True)
            return
        except HTTPException as exc:  # what the signature and size checks raise
            close = bool(exc.headers) and exc.headers.get("Connection") == "close"
            await send_json(send, exc.status_code, MinerError(exc.status_code, str(exc.detail)).body(), close=close,
                            extra_headers=exc.headers)  # e.g. Btsession-Error: the sender shakes hands again
            return
        except MinerError as exc:
            await send_json(send, exc.status, exc.body())
            return
        except Exception:
            logger.exception("chat request failed")
            await send_json(send, 500, MinerError(500, "the miner failed to answer").body())
            return
        await stream_chat(receive, send, chunk_events(streams, first, model, wants_usage(body)))


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
        close = getattr(stream.batches, "aclose", None)
        if close is not None:
            await close()


async def complete_chat(streams: list[ChoiceStream], model: str) -> dict[str, Any]:
    choices = []
    try:
        for stream in streams:
            text = "".join([piece async for batch in stream.batches for piece in batch])
            choices.append((text, stream.outcome.finish_reason))
    except CutConnection:
        raise MinerError(500, "the miner died while generating", code="broken_miner") from None
    finally:
        await close_all(streams)
    return wire.completion(wire.new_completion_id(), wire.now(), model, choices, total_usage(streams))


async def first_batch(streams: list[ChoiceStream]) -> Any:
    """The first batch, before any byte is sent: an upstream that fails here gets a real HTTP error."""
    try:
        return await anext(streams[0].batches, _END)
    except BaseException:
        await close_all(streams)
        raise


async def stream_chat(receive: Receive, send: Send, events: AsyncIterator[bytes]) -> None:
    """Send the events as they come; stop producing them if the client leaves."""
    await send({"type": "http.response.start", "status": 200, "headers": EVENT_STREAM_HEADERS})
    with DisconnectWatch(receive) as watch:
        try:
            async with aclosing(events):
                async for data in events:
                    # the part that ends with [DONE] is the last one: it ends the body too
                    await send({"type": "http.response.body", "body": data, "more_body": not data.endswith(DONE)})
        except CutConnection:
            return  # unfinished: the server closes the connection, and the client sees the stream die
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            asyncio.current_task().uncancel()


async def chunk_events(
    streams: list[ChoiceStream], first: Any, model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    """The SSE events of a streamed answer: one ``bytes`` per batch of pieces, the last one ending with [DONE].

    A choice's closing event is held back until the next choice starts or the
    answer ends, so that the end of an answer leaves in one piece.
    """
    completion_id, created = wire.new_completion_id(), wire.now()
    events = wire.ChunkEvents(completion_id, created, model)
    held = b""
    try:
        for index, stream in enumerate(streams):
            if held:
                yield held
                held = b""
            spoke = False
            async with aclosing(stream.batches) as batches:
                if index == 0 and first is not _END and first:
                    yield events.content(index, first, role_first=True)
                    spoke = True
                async for batch in batches:
                    if batch:
                        yield events.content(index, batch, role_first=not spoke)
                        spoke = True
            if not spoke:  # nothing was generated: still say who spoke
                held = events.content(index, [""], role_first=True)
            held += sse(wire.chunk(completion_id, created, model, index, {}, stream.outcome.finish_reason))
        if include_usage:
            held += sse(wire.usage_chunk(completion_id, created, model, total_usage(streams)))
    except MinerError as exc:
        held += sse(exc.body())
    except CutConnection:
        raise
    except Exception:
        logger.exception("chat stream failed")
        held += sse(MinerError(500, "the miner failed mid-stream").body())
    finally:
        await close_all(streams)
    yield held + DONE

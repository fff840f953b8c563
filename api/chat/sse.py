"""The chat stream (``api.chat.events``) as OpenAI's ``chat.completion.chunk`` SSE events.

    StreamingResponse(chat_sse(outcome), media_type="text/event-stream")    # what ``chat_response`` does

Each batch of events leaves as one piece; the last one ends with ``data: [DONE]``. A delta costs one
``orjson.dumps`` of its choices (``api.responses.ChunkEvents``); closing this stream closes the relay.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import AsyncIterator, Optional

from ..responses import SSE_DONE, ChunkEvents, error_event, miner_fields, sse
from .events import Delta, Failed, Usage
from .outcome import Outcome


async def chat_sse(outcome: Outcome) -> AsyncIterator[bytes]:
    request_id, created = outcome.request_id, outcome.created
    render: Optional[ChunkEvents] = None
    async with aclosing(outcome.events) as events:
        async for batch in events:
            pieces = []
            for event in batch:
                kind = type(event)
                if kind is Delta and event.fields is None:
                    if render is None or render.call is not event.call:
                        render = ChunkEvents(event.call, request_id=request_id, created=created, model=event.model)
                    pieces.append(render.choices(event.choices))
                elif kind is Delta:  # with the mode's own fields, after the choices
                    pieces.append(sse({"id": request_id, "object": "chat.completion.chunk", "created": created,
                                       "model": event.model, "choices": event.choices, **event.fields,
                                       **miner_fields(event.call)}))
                elif kind is Usage:
                    pieces.append(sse({"id": request_id, "object": "chat.completion.chunk", "created": created,
                                       "model": event.model, "choices": [], "usage": event.usage,
                                       **miner_fields(event.call)}))
                elif kind is Failed:
                    pieces.append(error_event(event.message, event.status, event.kind))
                else:
                    pieces.append(SSE_DONE)
            yield b"".join(pieces)

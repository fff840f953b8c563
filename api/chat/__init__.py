"""The chat core and how its answer reaches a client.

    from api.chat import answer, chat_response
    outcome = await answer(gateway, key, body, meter)      # select, race, relay, settle (api.chat.core)
    return chat_response(outcome)                          # JSON or SSE, with X-Request-Id

``api.chat.outcome``: what ``answer`` returns; ``api.chat.relay``: the winner's chunks to the client, as
typed events (``api.chat.events``) that each entry renders in its own format (``api.chat.sse``: OpenAI's
chat chunks). See docs/internals.md for the whole request path.
"""

from __future__ import annotations

from starlette.responses import Response, StreamingResponse

from ..json_response import FastJSONResponse
from .core import answer
from .outcome import Outcome
from .sse import chat_sse

__all__ = ["Outcome", "answer", "chat_response", "chat_sse"]


def chat_response(outcome: Outcome, headers: dict | None = None) -> Response:
    """The outcome as OpenAI sends a chat completion: one JSON object, or ``text/event-stream``."""
    headers = {"X-Request-Id": outcome.request_id, **(headers or {})}
    if outcome.events is not None:
        return StreamingResponse(chat_sse(outcome), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", **headers})
    return FastJSONResponse(outcome.completion, headers=headers)

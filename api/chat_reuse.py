"""Reuse the chat route's answer in routes built on it (conversations, legacy completions).

Those routes call ``chat_completions`` itself, so routing, modes, moderation
and every check of a chat request apply to them too; then they read or
reshape what it answered::

    reply = await chat_completions(body, request, key)       # JSONResponse or StreamingResponse
    completion = json_body(reply)                             # the chat.completion dict (not streamed)
    async for event in events(reply.body_iterator): ...      # dicts, or "[DONE]" (streamed)
"""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any, AsyncIterator, Union

from fastapi.responses import JSONResponse

DONE = "[DONE]"


def json_body(response: JSONResponse) -> dict:
    return json.loads(response.body)


async def events(body: AsyncIterator[bytes]) -> AsyncIterator[Union[dict, str]]:
    """The payloads of a ``text/event-stream`` body: parsed JSON objects, or ``"[DONE]"``."""
    buffer = b""
    async with aclosing(body):  # closing this closes the chat stream: its miners stop too
        async for piece in body:
            buffer += piece if isinstance(piece, bytes) else piece.encode()
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                for line in block.split(b"\n"):
                    if line.startswith(b"data:"):
                        data = line[5:].strip()
                        yield DONE if data == b"[DONE]" else json.loads(data)


def first_choice_text(completion: dict[str, Any]) -> str:
    for choice in completion.get("choices") or ():
        if choice.get("index", 0) == 0:
            return (choice.get("message") or {}).get("content") or ""
    return ""

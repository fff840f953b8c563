"""Reshape a streamed chat outcome for routes with another wire format (legacy completions, llama.cpp).

Those routes take the chat core's ``Outcome`` (``api.chat``); a whole answer is its dict, read as is. A
streamed one is the core's SSE chunks, which these routes still read back as events to reshape::

    outcome = await answer(gateway, key, body, meter)
    async for event in events(outcome.events): ...           # dicts, or "[DONE]"
"""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any, AsyncIterator, Union

DONE = "[DONE]"


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

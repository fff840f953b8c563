"""OpenAI's chat completion objects, as the miner sends them.

Streamed: one ``chat.completion.chunk`` per piece (the first of each choice
carries ``role``), one with ``finish_reason`` per choice, then optionally a
usage chunk with empty ``choices``. Not streamed: one ``chat.completion``.
"""

from __future__ import annotations

import random
import time
from typing import Any, Optional

import orjson


def new_completion_id() -> str:
    """24 random hex digits: an id, not a secret (``secrets`` would cost a system call per answer)."""
    return f"chatcmpl-{random.getrandbits(96):024x}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chunk(
    completion_id: str, created: int, model: str, index: int, delta: dict[str, Any], finish_reason: Optional[str] = None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}],
    }


def usage_chunk(completion_id: str, created: int, model: str, totals: dict[str, int]) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": totals,
    }


def completion(
    completion_id: str, created: int, model: str, choices: list[tuple[str, str]], totals: dict[str, int]
) -> dict[str, Any]:
    """``choices`` is ``[(text, finish_reason), ...]`` in index order."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
            for i, (text, finish_reason) in enumerate(choices)
        ],
        "usage": totals,
    }


class ChunkEvents:
    """The content events of one streamed completion, rendered from fixed parts.

    A stream sends one event per piece, so building a ``chunk`` dict and
    serialising it each time is most of what streaming costs. The parts that
    never change are serialised once; the bytes are exactly those of
    ``sse(chunk(completion_id, created, model, index, {"content": piece}))``
    (orjson keeps key order and adds no spaces).
    """

    def __init__(self, completion_id: str, created: int, model: str):
        head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        self._head = b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":'

    def content(self, index: int, pieces: list[str], *, role_first: bool) -> bytes:
        """One event per piece; the first carries ``"role": "assistant"`` when ``role_first``."""
        opening = self._head + str(index).encode() + b',"delta":{'
        events = [
            opening + (b'"role":"assistant",' if role_first and i == 0 else b"") + b'"content":' + orjson.dumps(piece)
            + b'},"finish_reason":null}]}\n\n'
            for i, piece in enumerate(pieces)
        ]
        return b"".join(events)

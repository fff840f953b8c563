"""OpenAI's chat completion objects, as the miner sends them.

Streamed: one ``chat.completion.chunk`` per piece (the first of each choice
carries ``role``), one with ``finish_reason`` per choice, then optionally a
usage chunk with empty ``choices``. Not streamed: one ``chat.completion``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Optional


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


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

"""Shape what a miner answered into OpenAI's response objects.

Every object names the miner that answered (``miner_uid``, ``miner_hotkey``,
and ``responder_hotkey`` as the subnet's first gateway called it); the
``openai`` SDK keeps such extra fields on the parsed object.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import orjson

from shared.chat_stream import ShownChoice, believable_count

from .miner_call import MinerCall


def count_words(text: str) -> int:
    return len(text.split())


def prompt_words(messages: list[Any]) -> int:
    total = 0
    for message in messages:
        content = message.content if hasattr(message, "content") else message.get("content")
        total += count_words(content if isinstance(content, str) else json.dumps(content))
    return total


def usage_of(call: MinerCall, prompt_tokens: int) -> dict:
    """The answer's usage, as billed and shown: the miner's counts where they can be true, ours otherwise.

    A miner's ``usage`` is only its word (``shared.chat_stream.believable_count``): its completion count is
    taken up to one token per character it sent, its prompt count up to one per byte of the request it was
    sent (``MinerCall.request_bytes``); text, negative or larger counts give way to the words counted here
    (``prompt_tokens``: the prompt's, counted by the caller). Only the three standard fields are passed on.
    """
    completion = completion_tokens_of(call)
    claimed_prompt = call.record.usage.get("prompt_tokens") if call.record.usage else None
    if claimed_prompt is not None:
        prompt_tokens = believable_count(claimed_prompt, call.request_bytes) or prompt_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def completion_tokens_of(call: MinerCall) -> int:
    """The miner's completion count where it can be true (``StreamRecord.claimed_completion_tokens``), else
    the words of what it sent."""
    record = call.record
    claimed = record.claimed_completion_tokens()
    if claimed is not None:
        return claimed
    return sum(count_words("".join(parts)) for parts in record.texts.values())


def miner_fields(call: MinerCall) -> dict:
    return {"miner_uid": call.miner.uid, "miner_hotkey": call.miner.hotkey, "responder_hotkey": call.miner.hotkey}


def completion_object(call: MinerCall, *, request_id: str, created: int, model: Optional[str],
                      prompt_tokens: int) -> dict:
    record = call.record
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": "".join(record.texts[index])},
            "finish_reason": record.finish_reasons.get(index, "stop"),
            "logprobs": None,
        }
        for index in sorted(record.texts)
    ]
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model or record.model or "default",
        "choices": choices,
        "usage": usage_of(call, prompt_tokens),
        **miner_fields(call),
    }


def client_choices(shown: list[ShownChoice]) -> list[dict]:
    """A miner's streamed ``choices`` as OpenAI's chunk has them, rebuilt from the parts that
    ``StreamRecord.take`` checked and kept (``ShownChoice``): the index, the assistant's role, the text, a finish
    reason of OpenAI's.

    The chunk as the miner sent it could carry anything else a client would act on (``tool_calls`` the
    request never offered, fields of its own); a whole answer is rebuilt the same way (``completion_object``).
    """
    rebuilt = []
    for index, assistant, content, reason in shown:
        delta: dict[str, str] = {"role": "assistant"} if assistant else {}
        if content is not None:
            delta["content"] = content
        rebuilt.append({"index": index, "delta": delta, "logprobs": None, "finish_reason": reason})
    return rebuilt


def sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


class ChunkEvents:
    """The winner's chunks as the client's SSE events: our id, created, model and miner fields, its choices.

    What is the same in every event of a stream is serialised once, on the first chunk; each event
    then costs one ``orjson.dumps`` of its ``choices``. The miner's own top-level fields (its id,
    usage, anything else) are not passed on.
    """

    def __init__(self, call: MinerCall, *, request_id: str, created: int, model: Optional[str]):
        self.call = call
        self.request_id = request_id
        self.created = created
        self.model = model
        self._prefix: Optional[bytes] = None

    def choices(self, choices: list) -> bytes:
        if self._prefix is None:
            head = orjson.dumps({"id": self.request_id, "object": "chat.completion.chunk", "created": self.created,
                                 "model": self.model or "default", **miner_fields(self.call)})
            self._prefix = b"data: " + head[:-1] + b',"choices":'
        return self._prefix + orjson.dumps(choices) + b"}\n\n"


def error_event(message: str, status: int = 502, kind: str = "upstream_error") -> bytes:
    return sse({"error": {"message": message, "type": kind, "code": status}})

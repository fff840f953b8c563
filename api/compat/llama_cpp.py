"""llama.cpp server's ``POST /completion``, over the chat core.

    curl $URL/completion -H "Authorization: Bearer $KEY" \\
         -d '{"prompt": "Building a website can be done in 10 simple steps:", "n_predict": 128}'

``prompt`` (a string) becomes one user message; ``n_predict`` is the token limit
(-1 or absent: the miners' default), ``temperature``, ``top_p``, ``seed``,
``stop`` and every chat field (``task``, ``uids``, ``model``…) apply. The answer
is llama.cpp's: ``content``, ``stop: true``, ``stop_type`` (``eos`` or
``limit``), ``tokens_predicted``, ``tokens_evaluated``, ``model``, plus the
miner fields. ``stream: true`` sends ``data: {"content": "…", "stop": false}``
events and a last one with ``stop: true`` and those fields, as llama.cpp does
(no ``[DONE]``); a failure mid-stream is a ``data: {"error": …}`` event.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, AsyncIterator, Optional, Union

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..access import admit
from ..chat import Outcome, answer
from ..chat.events import Delta, Failed, Usage
from ..errors import ApiError, describe_validation_errors
from ..gateway import gateway_of
from ..json_response import FastJSONResponse
from ..keys import KeyRecord
from ..meter import meter_of
from ..responses import error_event, miner_fields, sse
from ..schemas import ChatCompletionRequest

router = APIRouter(tags=["compatibility"])
MINER_FIELDS = ("miner_uid", "miner_hotkey", "responder_hotkey")


class LlamaCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # the subnet's chat fields (task, uids, …) pass on

    prompt: Union[str, list[str]]
    n_predict: int = Field(-1, ge=-2, le=32768)  # as max_tokens: what a miner takes
    stream: bool = False
    stop: Optional[list[str]] = None

    def chat(self) -> ChatCompletionRequest:
        if not isinstance(self.prompt, str):
            if len(self.prompt) != 1:
                raise ApiError(400, "one prompt per request (a list of prompts is not supported here)",
                               "unsupported_parameter")
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        fields: dict[str, Any] = {k: v for k, v in (self.model_extra or {}).items() if k not in DROPPED}
        fields.update(messages=[{"role": "user", "content": prompt}], stream=self.stream,
                      stream_options={"include_usage": True} if self.stream else None)
        if self.n_predict > 0:
            fields["max_tokens"] = self.n_predict
        if self.stop:
            fields["stop"] = self.stop
        try:
            return ChatCompletionRequest.model_validate(fields)
        except ValidationError as exc:
            raise ApiError(422, describe_validation_errors(exc.errors()), "invalid_request") from None


# llama.cpp sampling knobs that miners are not asked for (the chat request carries its own).
DROPPED = {"top_k", "min_p", "typical_p", "repeat_penalty", "repeat_last_n", "penalize_nl", "n_keep",
           "cache_prompt", "n_probs", "slot_id", "id_slot", "mirostat", "mirostat_tau", "mirostat_eta", "grammar",
           "ignore_eos", "logit_bias", "tfs_z", "presence_penalty", "frequency_penalty", "samplers"}


def stop_type(finish_reason: Optional[str]) -> str:
    return "limit" if finish_reason == "length" else "eos"


def final_fields(model: Optional[str], finish_reason: Optional[str], usage: Optional[dict], miner: dict) -> dict:
    usage = usage or {}
    return {"stop": True, "stop_type": stop_type(finish_reason), "model": model,
            "tokens_predicted": usage.get("completion_tokens", 0), "tokens_evaluated": usage.get("prompt_tokens", 0),
            **{name: miner[name] for name in MINER_FIELDS if name in miner}}


@router.post("/completion")
async def llama_completion(body: LlamaCompletionRequest, request: Request, key: KeyRecord = Depends(admit)):
    outcome = await answer(gateway_of(request), key, body.chat(), meter_of(request))
    if outcome.streamed:
        return StreamingResponse(llama_events(outcome), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Request-Id": outcome.request_id})
    completion = outcome.completion
    choice = (completion.get("choices") or [{}])[0]
    return FastJSONResponse({"content": (choice.get("message") or {}).get("content") or "", "id": completion["id"],
                             **final_fields(completion.get("model"), choice.get("finish_reason"),
                                            completion.get("usage"), completion)},
                            headers={"X-Request-Id": completion["id"]})


async def llama_events(outcome: Outcome) -> AsyncIterator[bytes]:
    """The chat stream's events (``api.chat.events``) as llama.cpp's: text pieces, then one event that says
    it stopped (with the model and miner of the stream's first event)."""
    first: Optional[Union[Delta, Usage]] = None
    finish_reason = usage = None
    async with aclosing(outcome.events) as events:
        async for batch in events:
            pieces = []
            for event in batch:
                if isinstance(event, Delta):
                    first = first or event
                    for choice in event.choices:
                        finish_reason = choice.get("finish_reason") or finish_reason
                        text = (choice.get("delta") or {}).get("content")
                        if text and choice.get("index", 0) == 0:
                            pieces.append(sse({"content": text, "stop": False}))
                elif isinstance(event, Usage):
                    first, usage = first or event, event.usage
                elif isinstance(event, Failed):
                    pieces.append(error_event(event.message, event.status, event.kind))
                else:
                    miner = miner_fields(first.call) if first is not None else {}
                    pieces.append(sse({"content": "", **final_fields(first and first.model, finish_reason, usage,
                                                                     miner)}))
            if pieces:
                yield b"".join(pieces)

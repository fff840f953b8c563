"""``POST /v1/completions``: OpenAI's legacy text completion, answered by the chat core (``api.chat``).

The prompt becomes one user message; every chat field applies (``task``,
``uids``, ``mixture``…), and the answer comes back as ``text_completion``
objects (streamed or not). As at OpenAI, ``max_tokens`` defaults to 16.
``prompt`` may be a list of strings (not streamed): the prompts run at once
and choice ``i·n + j`` is prompt ``i``'s ``j``-th completion. ``echo`` puts
the prompt before the text; ``stop`` is passed to miners. ``suffix``,
``logprobs`` and ``best_of`` (other than ``n``) are refused with 400 rather
than silently ignored; so are token-id prompts.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import AsyncIterator, Optional, Union

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, model_validator

from shared.schemas import ChatMessage

from ..access import admit
from ..admission import set_parts
from ..chat import Outcome, answer
from ..chat.events import Delta, Failed, Usage
from ..errors import ApiError
from ..gateway import gateway_of
from ..keys import KeyRecord
from ..meter import meter_of
from ..responses import SSE_DONE, error_event, miner_fields, sse
from ..schemas import ChatCompletionRequest

router = APIRouter(tags=["completions"])
MINER_FIELDS = ("miner_uid", "miner_hotkey", "responder_hotkey")


class CompletionRequest(ChatCompletionRequest):
    messages: Optional[list] = None  # type: ignore[assignment]  # built from the prompt
    prompt: Union[str, list[str]]
    max_tokens: Optional[int] = Field(16, ge=1, le=32768)
    echo: bool = False
    suffix: Optional[str] = None
    logprobs: Optional[int] = None
    best_of: Optional[int] = None
    # llama.cpp's name for max_tokens (-1: no limit); bounded as max_tokens is, since the validator below sets
    # max_tokens from it without the field's own check
    n_predict: Optional[int] = Field(None, ge=-2, le=32768)

    @model_validator(mode="after")
    def n_predict_is_max_tokens(self) -> "CompletionRequest":
        if self.n_predict is not None and "max_tokens" not in self.model_fields_set:
            self.max_tokens = self.n_predict if self.n_predict > 0 else None
        return self

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts:
            raise ApiError(422, "invalid request: prompt: must not be empty", "invalid_request")
        for name, unsupported in (("suffix", self.suffix is not None), ("logprobs", self.logprobs is not None),
                                  ("best_of", self.best_of not in (None, self.n))):
            if unsupported:
                raise ApiError(400, f"{name} is not supported by this gateway", "unsupported_parameter")
        if self.stream and len(prompts) > 1:
            raise ApiError(400, "several prompts cannot be streamed: send one prompt per request",
                           "unsupported_parameter")
        return prompts

    def chat(self, prompt: str) -> ChatCompletionRequest:
        # a ChatMessage, not a dict: ``model_copy`` does not validate, and the modes read ``.role``
        return self.model_copy(update={"messages": [ChatMessage(role="user", content=prompt)]})


def text_choices(completion: dict, offset: int, echo: Optional[str]) -> list[dict]:
    return [{"text": (echo or "") + (c.get("message") or {}).get("content", ""), "index": offset + c["index"],
             "logprobs": None, "finish_reason": c.get("finish_reason")} for c in completion.get("choices", [])]


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, key: KeyRecord = Depends(admit)):
    prompts = body.prompts()
    most = gateway_of(request).settings.completions_max_prompts
    if len(prompts) > most:
        raise ApiError(400, f"prompt: {len(prompts)} prompts; at most {most} per request"
                       " (COMPLETIONS_MAX_PROMPTS)", "too_many_prompts")
    set_parts(request, len(prompts))  # admitted for every prompt's work, before the first miner call
    gateway, meter = gateway_of(request), meter_of(request)
    if body.stream:
        outcome = await answer(gateway, key, body.chat(prompts[0]), meter)
        return StreamingResponse(text_events(outcome, prompts[0] if body.echo else None),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Request-Id": outcome.request_id})
    # One outcome per prompt, each forwarded with its own miners; one log for the request, every prompt's
    # miners in it, under the id the client gets back.
    outcomes = await asyncio.gather(*(answer(gateway, key, body.chat(p), meter) for p in prompts))
    completions = [outcome.completion for outcome in outcomes]
    first = completions[0]
    meter.request_id = first["id"]
    meter.prompt_tokens = sum(c["usage"]["prompt_tokens"] for c in completions)
    usage = {name: sum(c["usage"][name] for c in completions)
             for name in ("prompt_tokens", "completion_tokens", "total_tokens")}
    choices = [choice for i, (c, p) in enumerate(zip(completions, prompts))
               for choice in text_choices(c, i * body.n, p if body.echo else None)]
    return JSONResponse({"id": "cmpl-" + first["id"].removeprefix("chatcmpl-"), "object": "text_completion",
                         "created": first["created"], "model": first["model"], "choices": choices, "usage": usage,
                         **{name: first[name] for name in MINER_FIELDS if name in first}},
                        headers={"X-Request-Id": first["id"]})


async def text_events(outcome: Outcome, echo: Optional[str]) -> AsyncIterator[bytes]:
    """The chat stream's events (``api.chat.events``) as ``text_completion`` chunks; errors and ``[DONE]``
    as on the chat route."""
    completion_id = "cmpl-" + outcome.request_id.removeprefix("chatcmpl-")
    echoed = set()
    async with aclosing(outcome.events) as events:
        async for batch in events:
            pieces = []
            for event in batch:
                if isinstance(event, (Delta, Usage)):
                    head = {"id": completion_id, "object": "text_completion", "created": outcome.created,
                            "model": event.model, **miner_fields(event.call)}
                    if isinstance(event, Usage):
                        pieces.append(sse({**head, "choices": [], "usage": event.usage}))
                        continue
                    choices = []
                    for choice in event.choices:
                        text = (choice.get("delta") or {}).get("content") or ""
                        if echo and choice["index"] not in echoed:
                            echoed.add(choice["index"])
                            text = echo + text
                        if text or choice.get("finish_reason"):
                            choices.append({"text": text, "index": choice["index"], "logprobs": None,
                                            "finish_reason": choice.get("finish_reason")})
                    if choices:
                        pieces.append(sse({**head, "choices": choices}))
                elif isinstance(event, Failed):
                    pieces.append(error_event(event.message, event.status, event.kind))
                else:
                    pieces.append(SSE_DONE)
            if pieces:
                yield b"".join(pieces)

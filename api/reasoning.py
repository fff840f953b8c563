"""Test-time inference: reasoning over miners, one step at a time, then an answer.

Asked for with ``extra_body={"test_time_inference": true}`` or ``inference_mode:
"Chain-of-Thought"``. Each step is a whole answer from the first of
``FANOUT`` miners to finish (others replace those that fail), given the
conversation, the steps so far, and an instruction to write the next step.
Reasoning ends after ``REASONING_MAX_STEPS`` steps, when a miner says the
steps settle it (``DONE``), when half of ``REASONING_TIMEOUT`` is spent, or
when no miner could write a step; then one more round writes the answer in
what is left of the time.

The client sees each step as it is decided, as one content chunk
(``Step 1: …``), then the answer (``Answer: …``); chunks carry ``step`` (1, 2,
… and the answer's number) and ``final``. Non-streamed, the content is the
same text and ``steps`` lists the steps. Each round is forwarded for scoring
(``<request id>-step<k>``, the answer under the request's id). A failure before
the first byte is an HTTP error; after it, an error event then ``[DONE]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Optional

from shared.schemas import ChatMessage, MinerChatRequest, MinerRecord

from .chat.events import DONE, Delta, Event, Failed, Usage
from .chat.outcome import Outcome
from .errors import ApiError
from .meter import Meter
from .miner_call import MinerCall
from .responses import miner_fields, prompt_words, usage_of
from .rounds import first_answer, forward_when_over

if TYPE_CHECKING:
    from .gateway import Gateway

DONE_MARK = "DONE"
STEP_INSTRUCTION = (
    "Work towards a reply to the last user message above one step at a time. Write step {k} only: one short "
    "paragraph that builds on the steps so far. If the steps so far already settle the reply, answer with the "
    "single word DONE."
)
ANSWER_INSTRUCTION = (
    "Using the reasoning steps above, write the final reply to the last user message. Give only the reply, "
    "without repeating the steps."
)


@dataclass
class Step:
    index: int
    final: bool
    call: MinerCall

    @property
    def text(self) -> str:
        return self.call.record.text.strip()

    def rendered(self) -> str:
        return f"Answer: {self.text}" if self.final else f"Step {self.index}: {self.text}\n\n"


class Reasoner:
    """The steps of one request; ``next_step()`` until None, then ``answer()``."""

    def __init__(self, gateway: Gateway, miner_request: MinerChatRequest, candidates: list[MinerRecord], width: int,
                 request_id: str, meter: Optional[Meter] = None):
        self.gateway = gateway
        self.meter = meter  # every step's miners go in the request's log
        self.request = miner_request
        self.candidates = candidates
        self.fanout = width or gateway.settings.fanout
        self.request_id = request_id
        started = time.monotonic()
        self.steps_until = started + gateway.settings.reasoning_timeout / 2
        self.answer_until = started + gateway.settings.reasoning_timeout
        self.steps: list[Step] = []
        self.over = False

    def round_request(self, instruction: str, index: int) -> MinerChatRequest:
        messages = list(self.request.messages)
        if self.steps:
            messages.append(ChatMessage(role="assistant", content="".join(s.rendered() for s in self.steps).strip()))
        messages.append(ChatMessage(role="user", content=instruction))
        return self.request.model_copy(update={"messages": messages, "n": 1, "seed": self.request.seed + index})

    async def ask(self, request: MinerChatRequest, request_id: str, until: float) -> MinerCall:
        calls: list[MinerCall] = []
        try:
            payload = request.model_dump_json(exclude_none=True).encode()
            return await first_answer(self.gateway, self.candidates, payload,
                                      max_tokens=request.sampling_parameters.max_new_tokens, fanout=self.fanout,
                                      timeout=max(0.1, until - time.monotonic()), calls=calls)
        finally:
            forward_when_over(self.gateway, request_id, request, calls, self.meter)

    async def next_step(self) -> Optional[Step]:
        index = len(self.steps) + 1
        if self.over or index > self.gateway.settings.reasoning_max_steps or time.monotonic() >= self.steps_until:
            return None
        request = self.round_request(STEP_INSTRUCTION.format(k=index), index)
        try:
            call = await self.ask(request, f"{self.request_id}-step{index}", self.steps_until)
        except ApiError:
            self.over = True  # no miner could write a step: answer from what there is
            return None
        if call.record.text.strip().rstrip(".").upper() == DONE_MARK:
            self.over = True
            return None
        step = Step(index, False, call)
        self.steps.append(step)
        if self.meter is not None:
            self.meter.contributed(call)
        return step

    async def answer(self) -> Step:
        index = len(self.steps) + 1
        request = self.round_request(ANSWER_INSTRUCTION, index)
        step = Step(index, True, await self.ask(request, self.request_id, self.answer_until))
        if self.meter is not None:
            self.meter.won_by(step.call)
        return step

    def usage(self, final: Step, prompt_tokens: int) -> dict:
        completion = sum(usage_of(s.call, 0)["completion_tokens"] for s in [*self.steps, final])
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}


def step_delta(step: Step, *, model: str, first: bool) -> Delta:
    delta = {"role": "assistant", "content": step.rendered()} if first else {"content": step.rendered()}
    finish = step.call.record.finish_reasons.get(0, "stop") if step.final else None
    return Delta([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], step.call, model,
                 {"step": step.index, "final": step.final})


async def stream_steps(reasoner: Reasoner, step: Optional[Step], final: Optional[Step], *, model: str,
                       include_usage: bool, prompt_tokens: int) -> AsyncIterator[list[Event]]:
    """Each step as one delta as soon as it is decided, then the answer (``api.chat.events``)."""
    first = True
    while step is not None:
        yield [step_delta(step, model=model, first=first)]
        first = False
        step = await reasoner.next_step()
    if final is None:
        try:
            final = await reasoner.answer()
        except ApiError as exc:
            yield [Failed(f"test-time inference failed at the answer: {exc.message}", exc.status), DONE]
            return
    events: list[Event] = [step_delta(final, model=model, first=first)]
    if include_usage:
        events.append(Usage(reasoner.usage(final, prompt_tokens), final.call, model))
    events.append(DONE)
    yield events


async def serve_reasoning(body, miner_request: MinerChatRequest, candidates: list[MinerRecord], width: int, *,
                          gateway: Gateway, request_id: str, created: int, meter: Optional[Meter] = None):
    if body.n > 1:
        raise ApiError(400, "n > 1 is not supported with test-time inference", "unsupported_parameter")
    reasoner = Reasoner(gateway, miner_request, candidates, width, request_id, meter)
    prompt_tokens = prompt_words(body.messages)
    step = await reasoner.next_step()
    final = await reasoner.answer() if step is None else None  # no step at all: fail before the first byte
    if body.stream:
        return Outcome(request_id, kind="reasoning", created=created, events=stream_steps(
            reasoner, step, final, model=body.model or "default", include_usage=body.include_usage,
            prompt_tokens=prompt_tokens))
    while step is not None:
        step = await reasoner.next_step()
    final = final or await reasoner.answer()
    content = "".join(s.rendered() for s in [*reasoner.steps, final])
    return Outcome(request_id, kind="reasoning", completion={
        "id": request_id, "object": "chat.completion", "created": created, "model": body.model or "default",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": final.call.record.finish_reasons.get(0, "stop"), "logprobs": None}],
        "usage": reasoner.usage(final, prompt_tokens),
        "steps": [{"index": s.index, "content": s.text, **miner_fields(s.call)} for s in reasoner.steps],
        **miner_fields(final.call),
    })

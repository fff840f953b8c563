"""The public chat request: OpenAI's fields plus the subnet's ``extra_body`` fields.

OpenAI's own sampling fields are honoured, never dropped: they are folded over
``sampling_parameters`` (defaults ← ``sampling_parameters`` ← ``temperature``,
``top_p``, ``max_tokens``/``max_completion_tokens``), so a client that only
knows the ``openai`` SDK gets what it asked for.
"""

from __future__ import annotations

import random
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.schemas import MAX_CHOICES, TASKS, ChatMessage, MinerChatRequest, SamplingParameters, assembled, updated

DEFAULT_MODEL_NAMES = {None, "", "default", "Default"}
REASONING_FAST_TASK = "MultiStepReasoningTask"
INFERENCE_MODES = {"Reasoning-Fast", "Chain-of-Thought", "Mixture-of-Agents"}
DEFAULT_SAMPLING = SamplingParameters()  # only ever copied (``ChatCompletionRequest.sampling``)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: Optional[str] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    max_tokens: Optional[int] = Field(None, ge=1, le=32768)
    max_completion_tokens: Optional[int] = Field(None, ge=1, le=32768)
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1, le=MAX_CHOICES)

    # The subnet's fields, sent through the SDK's extra_body.
    task: str = "InferenceTask"
    uids: Optional[list[int]] = Field(None, min_length=1, max_length=64)
    top_n: Optional[int] = Field(None, ge=1, le=256)
    sampling_parameters: Optional[SamplingParameters] = None
    mixture: bool = False
    test_time_inference: bool = False
    inference_mode: Optional[str] = None
    json_format: bool = False

    @field_validator("task")
    @classmethod
    def known_task(cls, task: str) -> str:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
        return task

    @field_validator("inference_mode")
    @classmethod
    def known_mode(cls, mode: Optional[str]) -> Optional[str]:
        if mode is not None and mode not in INFERENCE_MODES:
            raise ValueError(f"unknown inference_mode {mode!r}; one of {', '.join(sorted(INFERENCE_MODES))}")
        return mode

    @model_validator(mode="after")
    def uids_are_distinct(self) -> "ChatCompletionRequest":
        if self.inference_mode == "Reasoning-Fast":  # as the subnet's API does, whatever task was named
            self.task = REASONING_FAST_TASK
        if self.uids is not None and len(set(self.uids)) != len(self.uids):
            raise ValueError("uids must be distinct")
        if self.wants_mixture and self.wants_reasoning:
            raise ValueError("mixture and test-time inference cannot be combined: ask for one")
        return self

    @property
    def wants_mixture(self) -> bool:
        return self.mixture or self.inference_mode == "Mixture-of-Agents"

    @property
    def wants_reasoning(self) -> bool:
        return self.test_time_inference or self.inference_mode == "Chain-of-Thought"

    @property
    def requested_model(self) -> Optional[str]:
        return None if self.model in DEFAULT_MODEL_NAMES else self.model

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling(self) -> SamplingParameters:
        """OpenAI's fields over ``sampling_parameters``; both were validated with this request, so the
        merge is a copy, not a second validation."""
        update: dict[str, Any] = {}
        if self.temperature is not None:
            update["temperature"] = self.temperature
            update["do_sample"] = self.temperature > 0
        if self.top_p is not None:
            update["top_p"] = self.top_p
        limit = self.max_completion_tokens or self.max_tokens
        if limit is not None:
            update["max_new_tokens"] = limit
        if not update:
            return self.sampling_parameters or SamplingParameters()
        # a copy never changes what it copies: the defaults can be one object, not one built per request
        return updated(self.sampling_parameters or DEFAULT_SAMPLING, update)

    def to_miner_request(self, stream: bool = True) -> MinerChatRequest:
        """The body every miner of this request receives (one seed, so their answers compare).

        Built without validation (``shared.schemas.assembled``): every field was validated with this request
        under the same constraints as ``MinerChatRequest``'s (messages, n, task; extra fields pass through
        unvalidated either way), so a second validation would only cost time (tests/test_unvalidated_builds.py
        compares the two). The seed is not a secret: ``random`` (reseeded in a forked worker), no system call.
        """
        known = type(self).model_fields
        extra = self.model_extra
        passthrough = {k: v for k, v in extra.items() if k not in known} if extra else {}
        return assembled(MinerChatRequest, {
            "messages": list(self.messages),
            "model": self.requested_model,
            "task": self.task,
            "seed": self.seed if self.seed is not None else random.getrandbits(32),
            "n": self.n,
            "stream": stream,
            "sampling_parameters": self.sampling(),
        }, {"stream_options": {"include_usage": True}, "json_format": self.json_format, **passthrough})

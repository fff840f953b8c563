"""Wire schemas: every JSON body that crosses a process boundary inside the subnet.

Miners receive ``MinerChatRequest`` (and ``MinerWebRetrievalRequest`` at
``/web_retrieval``); the validator answers API workers with a
``Directory`` and accepts ``ScoringBatch`` at ``POST /scoring``. Public API
bodies live in ``api/`` because only the API speaks them.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from pydantic_core import PydanticUndefined

from .tasks import TASKS, Task  # noqa: F401 (TASKS is re-exported: both processes read it from here)

DEFAULT_TASK = Task.INFERENCE.value
WEB_RETRIEVAL_TASK = Task.WEB_RETRIEVAL.value


class SamplingParameters(BaseModel):
    """The subnet's sampling fields; OpenAI's own fields are folded in by the API."""

    model_config = ConfigDict(extra="allow")

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(50, ge=0)
    max_new_tokens: int = Field(1024, ge=1, le=32768)
    do_sample: bool = True


MAX_CHOICES = 8  # ``n``: the most choices one request may ask of a miner


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: Any = ""


class MinerChatRequest(BaseModel):
    """What a validator or API worker sends to a miner's ``/v1/chat/completions``."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: Optional[str] = None
    task: str = DEFAULT_TASK
    seed: int = 0
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = True
    sampling_parameters: SamplingParameters = Field(default_factory=SamplingParameters)


class MinerWebRetrievalRequest(BaseModel):
    """What a validator or API worker sends to a miner's ``POST /web_retrieval``.

    The miner answers a JSON list of ``{"url", "content", "relevant"}``: pages
    it found for the query, the page's text it relied on, and the passage of
    that text that answers the query.
    """

    search_query: str = Field(min_length=1, max_length=2000)
    n_results: int = Field(1, ge=1, le=20)


class WebResult(BaseModel):
    """One web retrieval result: ``relevant`` must be part of ``content``, and ``content`` of the page."""

    url: str = Field(min_length=1, max_length=2048)
    content: str = Field(min_length=1, max_length=100_000)
    relevant: str = Field(min_length=1, max_length=100_000)


class Availability(BaseModel):
    """What one miner says it can serve (the subnet's availability shape)."""

    task_availabilities: dict[str, bool] = Field(default_factory=dict)
    llm_model_availabilities: dict[str, bool] = Field(default_factory=dict)

    def serves(self, task: str, model: Optional[str]) -> bool:
        if not self.task_availabilities.get(task, False):
            return False
        if model is None:
            return True
        return self.llm_model_availabilities.get(model, False)


class MinerRecord(BaseModel):
    """One miner in the validator's directory."""

    uid: int
    hotkey: str
    address: Optional[str]
    incentive: float
    stake: float
    validator_permit: bool = False
    availability: Optional[Availability] = None  # None: not reachable at the last poll
    checked_at: Optional[float] = None
    # The validator's own moving-average score (fresher than on-chain incentive); None from a validator
    # that does not send it (the API then routes by incentive). See docs/routing.md.
    score: Optional[float] = None


class Directory(BaseModel):
    """What API workers need to route: every neuron with where it is and what it serves."""

    netuid: int
    block: int
    validator_hotkey: str
    generated_at: float
    miners: list[MinerRecord]
    _routing: Optional[dict] = PrivateAttr(default=None)  # the API's per-directory routing memo (not sent)


class MinerResponse(BaseModel):
    """Everything one miner answered to one request, attributed to its uid."""

    uid: int
    hotkey: str
    status: Literal["ok", "error", "timeout", "cancelled"]
    chunks: list[str] = Field(default_factory=list)  # text of choice 0, in arrival order
    timings: list[float] = Field(default_factory=list)  # seconds from send to each chunk
    finish_reason: Optional[str] = None
    error: Optional[str] = None
    completion_tokens: Optional[int] = None
    model: Optional[str] = None  # the model the miner says it answered with
    # Web retrieval: the miner's answer as it came (malformed entries included, so they can cost it).
    results: Optional[list[Any]] = Field(None, max_length=50)


class ScoringItem(BaseModel):
    """One request and all its miners' answers, forwarded to the validator once."""

    request_id: str = Field(min_length=1, max_length=128)
    source: Literal["organic", "synthetic"] = "organic"
    task: str = DEFAULT_TASK
    created_at: float
    request: MinerChatRequest
    responses: list[MinerResponse] = Field(min_length=1)
    # Web retrieval items: the query and how many results were asked of each miner.
    search_query: Optional[str] = None
    n_results: Optional[int] = Field(None, ge=1, le=20)
    # Synthetic rounds: each miner's own request (its own seed and prompt), so that an answer copied from
    # another miner answers the wrong request. Absent for organic items: every miner got ``request``.
    requests_by_uid: Optional[dict[int, MinerChatRequest]] = None
    # Organic items: a hash of the API key that asked (``shared.schemas.key_id``), so the validator can cap
    # what one key's traffic may do to a miner's score.
    key_id: Optional[str] = Field(None, max_length=64)

    def request_for(self, uid: int) -> MinerChatRequest:
        """What this miner was asked: its own request in a synthetic round, else the item's."""
        if self.requests_by_uid is not None and uid in self.requests_by_uid:
            return self.requests_by_uid[uid]
        return self.request


@functools.lru_cache(maxsize=4096)
def key_id(api_key: str) -> str:
    """A stable, non-reversible id for an API key: enough to count its traffic, useless to replay it."""
    return hashlib.sha256(b"scoring-key-id\n" + api_key.encode()).hexdigest()[:32]


class ScoringBatch(BaseModel):
    items: list[ScoringItem] = Field(min_length=1, max_length=1000)


Model = TypeVar("Model", bound=BaseModel)


def assembled(cls: type[Model], fields: dict[str, Any], extra: Optional[dict[str, Any]] = None) -> Model:
    """``cls.model_construct(**fields, **extra)`` for ``fields`` that name every one of the model's fields.

    For the hot path's models whose parts were all validated where they were made (the API's miner request
    and scoring item): ``model_construct`` walks every field for aliases and defaults, a Python loop on every
    request. The instance is the same (tests/test_unvalidated_builds.py compares it with a validated one,
    which a missing field would fail); ``extra`` is kept only by a model that allows extra fields.
    """
    model = cls.__new__(cls)
    _set = object.__setattr__
    _set(model, "__dict__", fields)
    _set(model, "__pydantic_fields_set__", set(fields))
    _set(model, "__pydantic_extra__", (extra or {}) if cls.model_config.get("extra") == "allow" else None)
    _set(model, "__pydantic_private__", None)
    return model


def updated(model: Model, changes: dict[str, Any]) -> Model:
    """``model.model_copy(update=changes)`` for ``changes`` that name only the model's own fields.

    ``model_copy`` goes through ``__copy__``: three ``copy()`` calls, a ``hasattr`` and a walk over private
    attributes, twice on every chat request (its model resolved, its sampling parameters). The copy is the
    same and, as with ``model_copy``, not validated (tests/test_unvalidated_builds.py compares the two).
    """
    cls = type(model)
    copied = cls.__new__(cls)
    _set = object.__setattr__
    _set(copied, "__dict__", {**model.__dict__, **changes})
    _set(copied, "__pydantic_fields_set__", model.__pydantic_fields_set__ | changes.keys())
    extra = model.__pydantic_extra__
    _set(copied, "__pydantic_extra__", None if extra is None else dict(extra))
    private = model.__pydantic_private__
    _set(copied, "__pydantic_private__", None if private is None else
         {name: value for name, value in private.items() if value is not PydanticUndefined})
    return copied

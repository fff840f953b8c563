"""What a backend gives the miner for one choice: batches of content pieces, then how it ended.

::

    stream = backend.open(request, model, index)
    async for batch in stream.batches:     # lists of text deltas, in order
        ...
    stream.outcome.finish_reason           # "stop" | "length", final once batches is exhausted
    stream.outcome.completion_tokens

A batch is what became ready together: the builtin backend's whole answer, or
the events one network read brought from an upstream server. The miner sends
a batch in one write (still one SSE event per piece), instead of one write per
piece. Behaviours (``miner.behaviours``) wrap ``batches`` and pass ``outcome``
on, so any backend can be made noisy, slow or broken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, Protocol

if TYPE_CHECKING:
    from shared.schemas import MinerChatRequest


@dataclass
class Outcome:
    """How a choice ended and what it cost; backends fill it in as they finish."""

    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ChoiceStream:
    batches: AsyncIterator[list[str]]
    outcome: Outcome = field(default_factory=Outcome)


async def all_at_once(pieces: list[str]) -> AsyncIterator[list[str]]:
    """``pieces`` as one batch (nothing at all when there are none)."""
    if pieces:
        yield pieces


class Backend(Protocol):
    """Produces the text of choice ``index`` of a request (choice ``i`` uses ``seed + i``)."""

    def open(self, request: "MinerChatRequest", model: str, index: int) -> ChoiceStream: ...

    async def close(self) -> None: ...

"""What a backend gives the miner for one choice: content pieces, then how it ended.

::

    stream = backend.open(request, model, index)
    async for piece in stream.pieces:      # text deltas, in order
        ...
    stream.outcome.finish_reason           # "stop" | "length", final once pieces is exhausted
    stream.outcome.completion_tokens

Behaviours (``miner.behaviours``) wrap ``pieces`` and pass ``outcome`` on, so
any backend can be made noisy, slow or broken.
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
    pieces: AsyncIterator[str]
    outcome: Outcome = field(default_factory=Outcome)


class Backend(Protocol):
    """Produces the text of choice ``index`` of a request (choice ``i`` uses ``seed + i``)."""

    def open(self, request: "MinerChatRequest", model: str, index: int) -> ChoiceStream: ...

    async def close(self) -> None: ...

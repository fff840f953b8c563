"""A streamed answer as typed events, which each public entry renders in its own wire format.

    outcome = await answer(gateway, key, body, meter)       # api.chat.core; outcome.events when streamed
    async with aclosing(outcome.events) as events:          # closing it stops the winner's miner
        async for batch in events:                          # the events that arrived together: one write
            for event in batch: ...                         # Delta | Usage | Failed | Done

The relay (``api.chat.relay``) and test-time inference (``api.reasoning``) make them; the chat route
renders OpenAI's ``chat.completion.chunk`` SSE (``api.chat.sse``), ``/v1/completions`` its
``text_completion`` chunks, llama.cpp's ``/completion`` its own events. A stream always ends with one
batch that holds ``DONE`` last, so the end of the answer leaves in the same write as its last content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from ..miner_call import MinerCall


@dataclass(slots=True)
class Delta:
    """Content: the miner's ``choices`` as OpenAI's chunk has them (``index``, ``delta`` with ``content``,
    and ``finish_reason`` on a choice's last one), who wrote them, and the model the client is shown."""

    choices: list[dict]
    call: MinerCall
    model: str
    fields: Optional[dict] = None  # the mode's own top-level fields (test-time inference: step, final)

    def text(self, index: int = 0) -> str:
        """The content this delta adds to choice ``index``."""
        for choice in self.choices:
            if choice.get("index", 0) == index:
                return (choice.get("delta") or {}).get("content") or ""
        return ""


@dataclass(slots=True)
class Usage:
    """The answer's token counts, after its last delta (sent when the client asked for usage)."""

    usage: dict
    call: MinerCall
    model: str


@dataclass(slots=True)
class Failed:
    """The answer broke after its first byte: told in-band, then ``DONE``."""

    message: str
    status: int = 502
    kind: str = "upstream_error"  # the error's ``type``: the miner's failure, unless said otherwise


@dataclass(slots=True)
class Done:
    """The end of the stream (after the last delta, usage or failure)."""


DONE = Done()
Event = Union[Delta, Usage, Failed, Done]

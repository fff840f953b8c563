"""What the chat core answers: one ``Outcome`` per chat request, which each entry renders its own way.

    outcome = await answer(gateway, key, body, meter)    # api.chat.core
    outcome.completion     # a whole ``chat.completion`` object (a dict), when not streamed
    outcome.events         # batches of typed events (``api.chat.events``), ending with DONE, when streamed

Adapters (the chat route and the fast path, ``/v1/completions``, conversations, the compat routes) read the
dict or render the events in their own wire format; none calls another route or reads another's bytes.
``kind`` says which mode answered ("chat": a race, after a mixture's first round or not; "reasoning":
test-time inference, whose answer has its own fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Optional

from .events import Event


@dataclass
class Outcome:
    request_id: str
    completion: Optional[dict] = None
    events: Optional[AsyncIterator[list[Event]]] = None
    kind: str = "chat"
    created: int = 0  # when streamed: the ``created`` of every event (a whole answer has its own)

    @property
    def streamed(self) -> bool:
        return self.events is not None

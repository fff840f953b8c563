"""What the chat core answers: one ``Outcome`` per chat request, which each entry renders its own way.

    outcome = await answer(gateway, key, body, meter)    # api.chat.core
    outcome.completion     # a whole ``chat.completion`` object (a dict), when not streamed
    outcome.events         # the ``chat.completion.chunk`` SSE events, ending with [DONE], when streamed

Adapters (the chat route and the fast path, ``/v1/completions``, conversations, the compat routes) read the
dict or the events; none calls another route. ``kind`` says which mode answered ("chat": a race, after a
mixture's first round or not; "reasoning": test-time inference, whose answer has its own fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Optional


@dataclass
class Outcome:
    request_id: str
    completion: Optional[dict] = None
    events: Optional[AsyncIterator[bytes]] = None
    kind: str = "chat"

    @property
    def streamed(self) -> bool:
        return self.events is not None

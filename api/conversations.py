"""A conversation kept server-side, and what a conversation store must do.

The store that implements it lives in ``api.store.conversations`` (SQLite or
PostgreSQL, whichever the keys use), so any worker on any host continues any
conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol


@dataclass
class Conversation:
    id: str
    created_at: float
    metadata: dict[str, str]
    messages: list[dict[str, Any]] = field(default_factory=list)

    def public(self) -> dict:
        return {"id": self.id, "object": "conversation", "created_at": int(self.created_at),
                "metadata": self.metadata, "messages": self.messages}


class ConversationStore(Protocol):
    async def create(self, *, owner: str, messages: list[dict], metadata: dict[str, str]) -> Conversation: ...

    async def get(self, conversation_id: str, *, owner: str) -> Optional[Conversation]: ...

    async def append(self, conversation_id: str, *, owner: str, messages: list[dict]) -> bool: ...

    async def delete(self, conversation_id: str, *, owner: str) -> bool: ...

    def close(self) -> None: ...

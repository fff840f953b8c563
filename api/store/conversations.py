"""Conversations in the store (SQLite or PostgreSQL), so every worker on every host sees them.

    conversations = Conversations(store.db)
    conversation = await conversations.create(owner=key_id, messages=[...], metadata={})
    await conversations.append(conversation.id, owner=key_id, messages=[user_message, reply])
    await conversations.get(conversation.id, owner=key_id)    # None when missing or someone else's

A conversation belongs to the API key that created it: another key gets the
same answer as for an id that does not exist. Messages are numbered per
conversation under a lock named after it (an advisory lock on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite), so two workers appending at once never take
the same number.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Optional

from ..conversations import Conversation


class Conversations:
    def __init__(self, db: Any):
        self.db = db

    def close(self) -> None:
        return None  # the store owns the connection

    @staticmethod
    async def _owned(tx: Any, conversation_id: str, owner: str) -> Optional[Any]:
        return await tx.fetchrow("SELECT created_at, metadata FROM conversations WHERE id = $1 AND owner = $2",
                                 conversation_id, owner)

    @staticmethod
    async def _append(tx: Any, conversation_id: str, messages: list[dict]) -> None:
        row = await tx.fetchrow("SELECT COALESCE(MAX(seq), 0) AS last FROM conversation_messages"
                                " WHERE conversation_id = $1", conversation_id)
        now = time.time()
        await tx.executemany(
            "INSERT INTO conversation_messages (conversation_id, seq, message, created_at) VALUES ($1, $2, $3, $4)",
            [(conversation_id, row["last"] + i, json.dumps(m), now) for i, m in enumerate(messages, 1)])

    async def create(self, *, owner: str, messages: list[dict], metadata: dict[str, str]) -> Conversation:
        conversation = Conversation("conv_" + secrets.token_hex(16), time.time(), metadata, messages)
        async with self.db.transaction(lock=f"conversation:{conversation.id}") as tx:
            await tx.execute("INSERT INTO conversations (id, owner, created_at, metadata) VALUES ($1, $2, $3, $4)",
                             conversation.id, owner, conversation.created_at, json.dumps(metadata))
            await self._append(tx, conversation.id, messages)
        return conversation

    async def get(self, conversation_id: str, *, owner: str) -> Optional[Conversation]:
        row = await self._owned(self.db, conversation_id, owner)
        if row is None:
            return None
        rows = await self.db.fetch("SELECT message FROM conversation_messages WHERE conversation_id = $1"
                                   " ORDER BY seq", conversation_id)
        return Conversation(conversation_id, row["created_at"], json.loads(row["metadata"]),
                            [json.loads(r["message"]) for r in rows])

    async def append(self, conversation_id: str, *, owner: str, messages: list[dict]) -> bool:
        async with self.db.transaction(lock=f"conversation:{conversation_id}") as tx:
            if await self._owned(tx, conversation_id, owner) is None:
                return False
            await self._append(tx, conversation_id, messages)
            return True

    async def delete(self, conversation_id: str, *, owner: str) -> bool:
        async with self.db.transaction(lock=f"conversation:{conversation_id}") as tx:
            if await self._owned(tx, conversation_id, owner) is None:
                return False
            await tx.execute("DELETE FROM conversation_messages WHERE conversation_id = $1", conversation_id)
            await tx.execute("DELETE FROM conversations WHERE id = $1", conversation_id)
            return True

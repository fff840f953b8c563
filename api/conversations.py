"""Conversations kept server-side, per API key, behind a small store interface.

    store = SqliteConversationStore(settings.sqlite_path)      # the keys' SQLite file, tables of its own
    conversation = await store.create(owner=key_id, messages=[...], metadata={})
    await store.append(conversation.id, owner=key_id, messages=[user_message, reply])
    await store.get(conversation.id, owner=key_id)           # None when missing or someone else's

A conversation belongs to the API key that created it: another key gets the
same answer as for an id that does not exist. Messages are numbered per
conversation inside an ``IMMEDIATE`` transaction, so API workers that share
the file never interleave two turns' messages. Only SQLite is implemented;
``ConversationStore`` is the interface a PostgreSQL store would implement.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from shared.sqlite import open_shared_sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS conversation_messages (
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    message TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
"""


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


class SqliteConversationStore:
    def __init__(self, path: Path):
        self._db = open_shared_sqlite(path, timeout=10.0)
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _append(self, conversation_id: str, messages: list[dict]) -> None:
        """Inside the caller's transaction."""
        (last,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM conversation_messages WHERE conversation_id = ?",
                                   (conversation_id,)).fetchone()
        now = time.time()
        self._db.executemany(
            "INSERT INTO conversation_messages (conversation_id, seq, message, created_at) VALUES (?, ?, ?, ?)",
            [(conversation_id, last + i, json.dumps(m), now) for i, m in enumerate(messages, 1)],
        )

    def _owned(self, conversation_id: str, owner: str) -> Optional[tuple]:
        return self._db.execute("SELECT created_at, metadata FROM conversations WHERE id = ? AND owner = ?",
                                (conversation_id, owner)).fetchone()

    def _transaction(self, work):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def create_sync(self, owner: str, messages: list[dict], metadata: dict[str, str]) -> Conversation:
        conversation = Conversation("conv_" + secrets.token_hex(16), time.time(), metadata, messages)

        def work() -> None:
            self._db.execute("INSERT INTO conversations (id, owner, created_at, metadata) VALUES (?, ?, ?, ?)",
                             (conversation.id, owner, conversation.created_at, json.dumps(metadata)))
            self._append(conversation.id, messages)

        self._transaction(work)
        return conversation

    def get_sync(self, conversation_id: str, owner: str) -> Optional[Conversation]:
        with self._lock:
            row = self._owned(conversation_id, owner)
            if row is None:
                return None
            messages = [json.loads(m) for (m,) in self._db.execute(
                "SELECT message FROM conversation_messages WHERE conversation_id = ? ORDER BY seq", (conversation_id,))]
        return Conversation(conversation_id, row[0], json.loads(row[1]), messages)

    def append_sync(self, conversation_id: str, owner: str, messages: list[dict]) -> bool:
        def work() -> bool:
            if self._owned(conversation_id, owner) is None:
                return False
            self._append(conversation_id, messages)
            return True

        return self._transaction(work)

    def delete_sync(self, conversation_id: str, owner: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner))
        return cursor.rowcount == 1

    async def create(self, *, owner: str, messages: list[dict], metadata: dict[str, str]) -> Conversation:
        return await asyncio.to_thread(self.create_sync, owner, messages, metadata)

    async def get(self, conversation_id: str, *, owner: str) -> Optional[Conversation]:
        return await asyncio.to_thread(self.get_sync, conversation_id, owner)

    async def append(self, conversation_id: str, *, owner: str, messages: list[dict]) -> bool:
        return await asyncio.to_thread(self.append_sync, conversation_id, owner, messages)

    async def delete(self, conversation_id: str, *, owner: str) -> bool:
        return await asyncio.to_thread(self.delete_sync, conversation_id, owner)

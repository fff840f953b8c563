"""A durable, bounded queue of miner responses waiting to be scored.

API workers POST batches to ``/scoring`` and the synthetic loop adds its own
rounds; each item lands here once (its ``request_id`` is unique, so a forward
retried after a lost reply is not counted twice), survives a restart, and is
handed to the scorer until it is marked scored. When more than ``max_items``
wait, the oldest are dropped and counted: fresh traffic matters more than a
backlog the scorer can no longer catch up with.

The file is the record; the items this process put are also kept as parsed
objects (up to ``HANDOFF_MAX``) until they are scored, so the scorer does not
parse again what ``/scoring`` has just validated. Anything else (a backlog
from before a restart, an overflowing handoff) is read back from the file.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from shared.schemas import ScoringItem
from shared.sqlite import execute_many

from .database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS scoring_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    task TEXT NOT NULL,
    received_at REAL NOT NULL,
    payload TEXT NOT NULL,
    scored INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS scoring_responses (
    item_id INTEGER NOT NULL REFERENCES scoring_items(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    hotkey TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scoring_responses_item ON scoring_responses(item_id);
CREATE INDEX IF NOT EXISTS scoring_items_pending ON scoring_items(scored, id);
CREATE TABLE IF NOT EXISTS scoring_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
HANDOFF_MAX = 4096  # parsed items kept for the scorer: about 20 scorer passes


@dataclass(frozen=True)
class PutResult:
    accepted: int
    duplicates: int
    dropped: int
    responses: Counter = field(default_factory=Counter)  # (source, uid, status) of the accepted items' responses


def bump(db: sqlite3.Connection, name: str, by: int) -> None:
    if by:
        db.execute(
            "INSERT INTO scoring_counters (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )


class ScoringQueue:
    def __init__(self, database: Database, max_items: int):
        self.db = database
        self.max_items = max_items
        self.responses: Counter[tuple[str, int, str]] = Counter()  # since start, for the metrics
        self.handoff: dict[int, ScoringItem] = {}  # row id → the unscored item as put here, in id order
        database.executescript(SCHEMA)

    async def put(self, items: list[ScoringItem]) -> PutResult:
        result = await asyncio.to_thread(self._put, items)
        self.responses.update(result.responses)  # on the event loop, where the metrics read it
        return result

    async def stats(self) -> dict:
        return await asyncio.to_thread(self._stats)

    async def counters(self) -> dict:
        """The persistent counters and how many items wait: cheap enough for every metrics scrape."""
        return await asyncio.to_thread(self._counters)

    def _counters(self) -> dict:
        with self.db.reading() as db:
            counters = dict(db.execute("SELECT name, value FROM scoring_counters"))
            (pending,) = db.execute("SELECT COUNT(*) FROM scoring_items WHERE scored = 0").fetchone()
        return {**counters, "pending": pending}

    async def pending(self, limit: int = 100) -> list[ScoringItem]:
        return [item for _, item in await asyncio.to_thread(self.take, limit)]

    def take(self, limit: int) -> list[tuple[int, ScoringItem]]:
        """The oldest unscored items with their row ids; they stay queued until ``mark_scored``."""
        with self.db.reading() as db:
            rows = db.execute(
                "SELECT id, payload FROM scoring_items WHERE scored = 0 ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            handoff = self.handoff
            return [(row_id, item if (item := handoff.get(row_id)) is not None else
                     ScoringItem.model_validate_json(payload)) for row_id, payload in rows]

    def find(self, request_id: str) -> Optional[tuple[bool, ScoringItem]]:
        """(scored?, item) for one request id, while the queue still keeps it."""
        with self.db.reading() as db:
            row = db.execute("SELECT scored, payload FROM scoring_items WHERE request_id = ?", (request_id,)).fetchone()
        return (bool(row[0]), ScoringItem.model_validate_json(row[1])) if row else None

    def mark_scored(self, db: sqlite3.Connection, ids: list[int]) -> None:
        """Inside the caller's transaction, together with the scores these items produced."""
        # One statement for the batch (an executemany would step, and hand the GIL over, once per id).
        db.execute("UPDATE scoring_items SET scored = 1 WHERE scored = 0 AND id IN (SELECT value FROM json_each(?))",
                   (json.dumps(ids),))
        bump(db, "scored", len(ids))
        for row_id in ids:
            self.handoff.pop(row_id, None)

    def _put(self, items: list[ScoringItem]) -> PutResult:
        first: dict[str, ScoringItem] = {}  # a request id repeated within the batch is stored once, as it came first
        for item in items:
            first.setdefault(item.request_id, item)
        with self.db.lock:
            with self.db.transaction() as db:
                stored = self._insert(db, first)
                dropped = self._drop_overflow(db)
                bump(db, "received", len(stored))
                bump(db, "duplicates", len(items) - len(stored))
                bump(db, "dropped", dropped)
            # Only after the commit (ids of a rolled-back insert are handed out again), and still under the lock.
            room = HANDOFF_MAX - len(self.handoff)
            self.handoff.update(stored[:max(room, 0)])
        responses = Counter((item.source, r.uid, r.status) for _, item in stored for r in item.responses)
        return PutResult(len(stored), len(items) - len(stored), dropped, responses)

    @staticmethod
    def _insert(db: sqlite3.Connection, items: dict[str, ScoringItem]) -> list[tuple[int, ScoringItem]]:
        """Store the items not stored before, in a few statements; returns (row id, item) of those stored now."""
        now = time.time()
        # Ids only grow (AUTOINCREMENT) and the caller's transaction holds the write lock: the rows above the
        # current maximum afterwards are exactly the ones these inserts added, known request ids being ignored.
        (before,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM scoring_items").fetchone()
        execute_many(
            db, "INSERT OR IGNORE INTO scoring_items (request_id, source, task, received_at, payload)"
            " VALUES (?, ?, ?, ?, ?)",
            [(item.request_id, item.source, item.task, now, item.model_dump_json()) for item in items.values()],
        )
        stored = [(row_id, items[request_id]) for row_id, request_id in db.execute(
            "SELECT id, request_id FROM scoring_items WHERE id > ? ORDER BY id", (before,))]
        execute_many(
            db, "INSERT INTO scoring_responses (item_id, uid, hotkey, status) VALUES (?, ?, ?, ?)",
            [(row_id, r.uid, r.hotkey, r.status) for row_id, item in stored for r in item.responses],
        )
        return stored

    def _drop_overflow(self, db: sqlite3.Connection) -> int:
        (waiting,) = db.execute("SELECT COUNT(*) FROM scoring_items WHERE scored = 0").fetchone()
        excess = waiting - self.max_items
        if excess <= 0:
            return 0
        (last,) = db.execute(
            "SELECT MAX(id) FROM (SELECT id FROM scoring_items WHERE scored = 0 ORDER BY id LIMIT ?)", (excess,)
        ).fetchone()
        db.execute("DELETE FROM scoring_items WHERE scored = 0 AND id <= ?", (last,))
        for row_id in [row_id for row_id in self.handoff if row_id <= last]:  # the handoff is in id order too
            del self.handoff[row_id]
        return excess

    def _stats(self) -> dict:
        with self.db.reading() as db:
            counters = dict(db.execute("SELECT name, value FROM scoring_counters"))
            (pending,) = db.execute("SELECT COUNT(*) FROM scoring_items WHERE scored = 0").fetchone()
            by_source = dict(db.execute("SELECT source, COUNT(*) FROM scoring_items GROUP BY source"))
            by_uid = {
                str(uid): {"responses": total, "ok": ok}
                for uid, total, ok in db.execute(
                    "SELECT uid, COUNT(*), SUM(status = 'ok') FROM scoring_responses GROUP BY uid ORDER BY uid"
                )
            }
        return {
            "received": counters.get("received", 0),
            "duplicates": counters.get("duplicates", 0),
            "dropped": counters.get("dropped", 0),
            "scored": counters.get("scored", 0),
            "pending": pending,
            "max_items": self.max_items,
            "items_by_source": by_source,
            "responses_by_uid": by_uid,
        }

    def prune_scored(self, keep: int) -> int:
        """Forget scored items beyond the newest ``keep``; returns how many went."""
        with self.db.transaction() as db:
            row = db.execute(
                "SELECT id FROM scoring_items WHERE scored = 1 ORDER BY id DESC LIMIT 1 OFFSET ?", (keep,)
            ).fetchone()
            if row is None:
                return 0
            return db.execute("DELETE FROM scoring_items WHERE scored = 1 AND id <= ?", (row[0],)).rowcount

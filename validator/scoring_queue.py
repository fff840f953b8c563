"""A durable, bounded queue of forwarded miner responses waiting to be scored.

API workers POST batches to ``/scoring``; each item lands here once (its
``request_id`` is unique, so a forward retried after a lost reply is not
counted twice) and survives a validator restart. When more than ``max_items``
wait, the oldest are dropped and counted: fresh traffic matters more than a
backlog the scorer can no longer catch up with.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shared.schemas import ScoringItem

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


@dataclass(frozen=True)
class PutResult:
    accepted: int
    duplicates: int
    dropped: int


class ScoringQueue:
    def __init__(self, path: Path, max_items: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self._db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    async def put(self, items: list[ScoringItem]) -> PutResult:
        return await asyncio.to_thread(self._put, items)

    async def stats(self) -> dict:
        return await asyncio.to_thread(self._stats)

    async def pending(self, limit: int = 100) -> list[ScoringItem]:
        return await asyncio.to_thread(self._pending, limit)

    def _put(self, items: list[ScoringItem]) -> PutResult:
        accepted = duplicates = 0
        now = time.time()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO scoring_items (request_id, source, task, received_at, payload)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (item.request_id, item.source, item.task, now, item.model_dump_json()),
                    )
                    if cursor.rowcount == 0:
                        duplicates += 1
                        continue
                    accepted += 1
                    db.executemany(
                        "INSERT INTO scoring_responses (item_id, uid, hotkey, status) VALUES (?, ?, ?, ?)",
                        [(cursor.lastrowid, r.uid, r.hotkey, r.status) for r in item.responses],
                    )
                dropped = self._drop_overflow(db)
                self._bump(db, "received", accepted)
                self._bump(db, "duplicates", duplicates)
                self._bump(db, "dropped", dropped)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return PutResult(accepted, duplicates, dropped)

    def _drop_overflow(self, db: sqlite3.Connection) -> int:
        (waiting,) = db.execute("SELECT COUNT(*) FROM scoring_items WHERE scored = 0").fetchone()
        excess = waiting - self.max_items
        if excess <= 0:
            return 0
        db.execute(
            "DELETE FROM scoring_items WHERE id IN (SELECT id FROM scoring_items WHERE scored = 0 ORDER BY id LIMIT ?)",
            (excess,),
        )
        return excess

    @staticmethod
    def _bump(db: sqlite3.Connection, name: str, by: int) -> None:
        if by:
            db.execute(
                "INSERT INTO scoring_counters (name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, by),
            )

    def _stats(self) -> dict:
        with self._lock:
            counters = dict(self._db.execute("SELECT name, value FROM scoring_counters"))
            (pending,) = self._db.execute("SELECT COUNT(*) FROM scoring_items WHERE scored = 0").fetchone()
            by_uid = {
                str(uid): {"responses": total, "ok": ok}
                for uid, total, ok in self._db.execute(
                    "SELECT uid, COUNT(*), SUM(status = 'ok') FROM scoring_responses GROUP BY uid ORDER BY uid"
                )
            }
        return {
            "received": counters.get("received", 0),
            "duplicates": counters.get("duplicates", 0),
            "dropped": counters.get("dropped", 0),
            "pending": pending,
            "max_items": self.max_items,
            "responses_by_uid": by_uid,
        }

    def _pending(self, limit: int) -> list[ScoringItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT payload FROM scoring_items WHERE scored = 0 ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [ScoringItem.model_validate(json.loads(payload)) for (payload,) in rows]

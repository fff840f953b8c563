"""API keys, stored hashed in SQLite.

A key is 32 random bytes shown once, at creation; the store keeps only its
sha256. Looking a key up by its hash means no stored secret is ever compared
byte by byte, so the check takes the same time whatever the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

KEY_PREFIX = "sk-sn-"

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    key_hint TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    rate_limit INTEGER,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL
);
"""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def mask(key: str) -> str:
    return f"{key[:len(KEY_PREFIX) + 4]}…{key[-4:]}"


@dataclass(frozen=True)
class KeyRecord:
    key_hash: str
    key_hint: str
    name: str
    rate_limit: Optional[int]
    enabled: bool
    created_at: float


class KeyStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, args: tuple) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def create_sync(self, *, name: str = "", rate_limit: Optional[int] = None) -> str:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        self._run(
            "INSERT INTO api_keys (key_hash, key_hint, name, rate_limit, created_at) VALUES (?, ?, ?, ?, ?)",
            (hash_key(key), mask(key), name, rate_limit, time.time()),
        )
        return key

    async def create(self, *, name: str = "", rate_limit: Optional[int] = None) -> str:
        return await asyncio.to_thread(self.create_sync, name=name, rate_limit=rate_limit)

    def lookup(self, key: str) -> Optional[KeyRecord]:
        row = self._run(
            "SELECT key_hash, key_hint, name, rate_limit, enabled, created_at FROM api_keys WHERE key_hash = ?",
            (hash_key(key),),
        ).fetchone()
        return KeyRecord(row[0], row[1], row[2], row[3], bool(row[4]), row[5]) if row else None

    async def modify(self, key: str, *, rate_limit: Optional[int], name: Optional[str] = None,
                     enabled: Optional[bool] = None) -> bool:
        fields, args = [], []
        for column, value in (("rate_limit", rate_limit), ("name", name), ("enabled", enabled)):
            if value is not None:
                fields.append(f"{column} = ?")
                args.append(int(value) if isinstance(value, bool) else value)
        if not fields:
            return await asyncio.to_thread(self.lookup, key) is not None
        cursor = await asyncio.to_thread(
            self._run, f"UPDATE api_keys SET {', '.join(fields)} WHERE key_hash = ?", (*args, hash_key(key))
        )
        return cursor.rowcount == 1

    async def delete(self, key: str) -> bool:
        cursor = await asyncio.to_thread(self._run, "DELETE FROM api_keys WHERE key_hash = ?", (hash_key(key),))
        return cursor.rowcount == 1

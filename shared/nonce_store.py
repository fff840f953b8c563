"""Replay protection shared by every process of one server.

``bittensor.http_auth.verify`` remembers accepted (hotkey, nonce) pairs in a
per-process set by default, so with two uvicorn workers a request replayed to
the other worker would pass. These stores are shared instead::

    store = open_nonce_store(redis_url="", sqlite_path=".data/nonces.sqlite", namespace=my_hotkey)
    http_auth.verify(..., nonce_store=store)   # True the first time a pair is seen, in any process

Both are synchronous because ``verify`` is; each call is one indexed insert
(SQLite, about 0.1 ms) or one ``SET NX EX`` round trip on loopback (Redis).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from .sqlite import open_shared_sqlite

RETENTION_SECONDS = 60.0


class SqliteNonceStore:
    """Nonces in a SQLite file (WAL), shared by the processes of one host."""

    def __init__(self, path: str | Path, namespace: str = "", retention: float = RETENTION_SECONDS):
        self.retention = retention
        self.namespace = namespace
        self._db = open_shared_sqlite(path, timeout=10.0)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS nonces (namespace TEXT NOT NULL, hotkey TEXT NOT NULL,"
            " nonce INTEGER NOT NULL, expires REAL NOT NULL, PRIMARY KEY (namespace, hotkey, nonce))"
        )
        self._lock = threading.Lock()
        self._writes = 0

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO nonces (namespace, hotkey, nonce, expires) VALUES (?, ?, ?, ?)",
                (self.namespace, hotkey_ss58, nonce_ns, now + self.retention),
            )
            self._writes += 1
            if self._writes % 1000 == 0:
                self._db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
            return cursor.rowcount == 1

    def close(self) -> None:
        self._db.close()


class RedisNonceStore:
    """Nonces in Redis (``SET NX EX``), shared by the processes of every host."""

    def __init__(self, url: str, namespace: str = "", retention: float = RETENTION_SECONDS):
        import redis

        self.retention = retention
        self._prefix = f"btauth:nonce:{namespace}:"
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0)

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        key = f"{self._prefix}{hotkey_ss58}:{nonce_ns}"
        return bool(self._redis.set(key, b"1", nx=True, ex=int(self.retention) + 1))

    def close(self) -> None:
        self._redis.close()


def open_nonce_store(*, redis_url: str, sqlite_path: str | Path, namespace: str):
    """Redis when a URL is configured (several hosts), else a SQLite file (one host)."""
    if redis_url:
        return RedisNonceStore(redis_url, namespace=namespace)
    return SqliteNonceStore(sqlite_path, namespace=namespace)

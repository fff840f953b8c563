"""Replay protection shared by every process of one server.

``bittensor.http_auth.verify`` remembers accepted (hotkey, nonce) pairs in a
per-process set by default, so with two uvicorn workers a request replayed to
the other worker would pass. These stores are shared instead::

    store = open_nonce_store(redis_url="", sqlite_path=".data/nonces.sqlite", namespace=my_hotkey)
    http_auth.verify(..., nonce_store=store)   # True the first time a pair is seen, in any process

Both are synchronous because ``verify`` is; each call is one insert into a clustered
key (SQLite, a few microseconds) or one ``SET NX EX`` round trip on loopback (Redis).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from loguru import logger

from .sqlite import open_shared_sqlite

RETENTION_SECONDS = 60.0


class SqliteNonceStore:
    """Nonces in a SQLite file (WAL), shared by the processes of one host.

    The table is clustered on its key (``WITHOUT ROWID``): one b-tree to
    write per request instead of a table and its index, which halves the page
    writes of every insert. The key starts with the nonce, the sender's clock
    in nanoseconds: ``verify`` refuses a nonce older than its freshness window
    before it asks the store, so rows whose nonce is older than ``retention``
    can never matter again, and they are deleted as one range of the key.

    The file is written without syncing (``synchronous=OFF``). With SQLite's
    default for WAL (``NORMAL``) a commit was not synced either, but every few
    hundred inserts the insert that filled the log ran a checkpoint that synced
    the log and the database: a pause of milliseconds (tens on a busy disk) on
    the server's event loop, which every request in flight waited for (it was
    the chain's p99 at c=32). Replay protection does not need those syncs:

    - a process that dies (crash, kill, OOM) loses nothing: every commit is in
      the OS's page cache before ``check_and_store`` returns, and the next
      process reads it, exactly as before;
    - an OS crash or power loss could lose the last commits, as it could with
      ``NORMAL``; a machine that comes back takes far longer than the freshness
      window (``max_age`` + ``allowed_skew``, 10 s), and ``verify`` refuses a
      nonce older than that before it asks the store;
    - what the syncs also prevented is a file damaged by a power loss: this
      store then starts a new file (the old one, renamed ``….damaged``, only
      held nonces that are stale by then).
    """

    CLEAN_UP_EVERY = 1000  # writes

    def __init__(self, path: str | Path, namespace: str = "", retention: float = RETENTION_SECONDS):
        self.retention = retention
        self.namespace = namespace
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:  # damaged (a power loss with no syncs): its nonces are stale anyway
            damaged = f"{path}.damaged"
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            logger.warning("nonce store {} is damaged ({}); starting a new one, the old one is {}",
                           path, reason, damaged)
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.replace(f"{path}{suffix}", f"{damaged}{suffix}")
                except FileNotFoundError:  # not there, or another worker moved it first
                    pass
            self._db = self._open(path)
        self._lock = threading.Lock()
        self._writes = 0

    @staticmethod
    def _open(path: str | Path) -> sqlite3.Connection:
        db = open_shared_sqlite(path, timeout=10.0)
        try:
            db.execute("PRAGMA synchronous=OFF")  # see the class's docstring
            db.execute(
                "CREATE TABLE IF NOT EXISTS btauth_nonces (namespace TEXT NOT NULL, nonce INTEGER NOT NULL,"
                " hotkey TEXT NOT NULL, PRIMARY KEY (namespace, nonce, hotkey)) WITHOUT ROWID"
            )
            check = db.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
        except BaseException:
            db.close()
            raise
        return db

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO btauth_nonces (namespace, nonce, hotkey) VALUES (?, ?, ?)",
                (self.namespace, nonce_ns, hotkey_ss58),
            )
            self._writes += 1
            if self._writes % self.CLEAN_UP_EVERY == 0:
                oldest = time.time_ns() - int(self.retention * 1e9)
                self._db.execute(
                    "DELETE FROM btauth_nonces WHERE namespace = ? AND nonce < ?", (self.namespace, oldest)
                )
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

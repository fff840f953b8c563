"""Open a SQLite file that several processes share: WAL, a busy timeout, no surprise locks.

    db = open_shared_sqlite(path)      # sqlite3.Connection in autocommit mode

Switching a new file to WAL needs a moment of exclusive access, and SQLite
answers "database is locked" at once, without waiting, when two processes
(two API workers starting together on a fresh machine) try it at the same
time. The switch is retried here until it succeeds or ``timeout`` passes.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def open_shared_sqlite(path: str | Path, *, timeout: float = 30.0) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.05)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return db

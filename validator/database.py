"""The validator's SQLite file: the scoring queue and the scores live in it together.

One connection, one lock, and ``transaction()`` so that marking items scored
and saving the scores they produced commit together: a crash can neither lose
a scored item's effect nor count it twice after the restart.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from shared.sqlite import open_shared_sqlite


class Database:
    def __init__(self, path: Path):
        self.connection = open_shared_sqlite(path, timeout=10.0)
        self.connection.execute("PRAGMA foreign_keys=ON")
        self.lock = threading.RLock()

    def executescript(self, script: str) -> None:
        with self.lock:
            self.connection.executescript(script)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield self.connection
            except BaseException:
                self.connection.execute("ROLLBACK")
                raise
            self.connection.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            yield self.connection

    def close(self) -> None:
        self.connection.close()

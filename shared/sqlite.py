"""Open a SQLite file that several processes share: WAL, a busy timeout, no surprise locks.

    db = open_shared_sqlite(path)      # sqlite3.Connection in autocommit mode
    execute_many(db, "INSERT INTO t (a, b) VALUES (?, ?)", rows)   # many rows, a few statements

Switching a new file to WAL needs a moment of exclusive access, and SQLite
answers "database is locked" at once, without waiting, when two processes
(two API workers starting together on a fresh machine) try it at the same
time. The switch is retried here until it succeeds or ``timeout`` passes.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Optional, Sequence


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


# -- many rows in a few statements -------------------------------------------------------------------------------
#
# ``sqlite3.executemany`` steps the statement once per row, and lets go of the GIL around every step. In a
# thread beside a busy event loop (the API's request log, the validator's intake) each row then waits for the
# loop to hand the GIL back: in an API worker under load a 500-log batch held the file's write lock for
# 145-610 ms, and 48-137 ms written this way (docs/performance.md, round 4). An ``INSERT … VALUES (?, …)`` of
# many rows runs here as a few statements of many rows each (``VALUES (…), (…), …``): the GIL is let go once
# per statement, and the values are bound as ``executemany`` binds them. Statements have 2^k rows (at most
# ``MAX_ROWS``), so a batch of any size takes at most a dozen of them and SQLite prepares few distinct texts
# (the connection's statement cache keeps them).

BULK_MIN_ROWS = 2  # one row: executemany's one step
MAX_ROWS = 256  # rows in one statement, at most (and fewer where SQLite allows fewer variables)
_INSERT_VALUES = re.compile(r"^\s*(INSERT(?:\s+OR\s+\w+)?\s+INTO\s+[\w.\"]+\s*\([^()]*\))\s*VALUES\s*\(([^()]*)\)(.*)$",
                            re.IGNORECASE | re.DOTALL)
_PLACEHOLDER = re.compile(r"^\?(\d*)$")
_bulk_forms: dict[str, Optional[tuple[str, str, int]]] = {}
_texts: dict[tuple[tuple[str, str, int], int], str] = {}


def bulk_form(sql: str) -> Optional[tuple[str, str, int]]:
    """``INSERT … VALUES (?1, ?2, …) tail`` as (``INSERT …``, `` tail``, its number of values), or None when
    ``sql`` is anything else (an UPDATE, expressions among the values, placeholders after them)."""
    if sql in _bulk_forms:
        return _bulk_forms[sql]
    form = None
    match = _INSERT_VALUES.match(sql)
    if match and "?" not in match.group(3) and "$" not in match.group(3):
        items = [item.strip() for item in match.group(2).split(",")]
        numbers = [_PLACEHOLDER.match(item) for item in items]
        if all(numbers) and all(not n.group(1) or int(n.group(1)) == i + 1 for i, n in enumerate(numbers)):
            form = match.group(1), match.group(3), len(items)
    _bulk_forms[sql] = form
    return form


def statement_for(form: tuple[str, str, int], rows: int) -> str:
    """The INSERT of ``form`` with ``rows`` rows of anonymous placeholders (remembered per size)."""
    text = _texts.get((form, rows))
    if text is None:
        head, tail, width = form
        row = "(" + ", ".join(["?"] * width) + ")"
        text = _texts[(form, rows)] = f"{head} VALUES {', '.join([row] * rows)}{tail}"
    return text


def execute_many(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """``db.executemany(sql, rows)``, as a few statements of many rows each when ``sql`` is a plain INSERT.

    The rows are bound exactly as ``executemany`` binds them (the same values and SQL types, the same errors
    for what SQLite cannot store), in the same order.
    """
    form = bulk_form(sql) if len(rows) >= BULK_MIN_ROWS else None
    if form is None or any(len(row) != form[2] for row in rows):  # else executemany says what is wrong
        db.executemany(sql, rows)
        return
    most = min(MAX_ROWS, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // form[2])
    size = 1 << (max(1, most).bit_length() - 1)  # the largest power of two allowed
    done = 0
    while done < len(rows):
        while size > len(rows) - done:
            size >>= 1
        chunk = rows[done:done + size]
        db.execute(statement_for(form, size), [value for row in chunk for value in row])
        done += size

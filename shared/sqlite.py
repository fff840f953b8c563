"""Open a SQLite file that several processes share: WAL, a busy timeout, no surprise locks.

    db = open_shared_sqlite(path)      # sqlite3.Connection in autocommit mode
    execute_many(db, "INSERT INTO t (a, b) VALUES (?, ?)", rows)   # many rows, one statement

Switching a new file to WAL needs a moment of exclusive access, and SQLite
answers "database is locked" at once, without waiting, when two processes
(two API workers starting together on a fresh machine) try it at the same
time. The switch is retried here until it succeeds or ``timeout`` passes.
"""

from __future__ import annotations

import json
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


# -- many rows in one statement ----------------------------------------------------------------------------------
#
# ``sqlite3.executemany`` steps the statement once per row, and lets go of the GIL around every step. In a
# thread beside a busy event loop (the API's request log, the validator's intake) each row then waits for the
# loop to hand the GIL back: in an API worker under load a 500-log batch held the file's write lock for
# 145-610 ms, and 48-137 ms written this way (docs/performance.md, round 4). An ``INSERT … VALUES (?, …)`` of
# many rows runs here as ONE statement over a JSON array of the rows (``json_each``): one step, the GIL let go once.

BULK_MIN_ROWS = 4  # below this, executemany's per-row steps cost less than building the JSON
_INSERT_VALUES = re.compile(r"^\s*(INSERT(?:\s+OR\s+\w+)?\s+INTO\s+[\w.\"]+\s*\([^()]*\))\s*VALUES\s*\(([^()]*)\)(.*)$",
                            re.IGNORECASE | re.DOTALL)
_PLACEHOLDER = re.compile(r"^\?(\d*)$")
_bulk_forms: dict[str, Optional[tuple[str, int]]] = {}


def bulk_form(sql: str) -> Optional[tuple[str, int]]:
    """``INSERT … VALUES (?1, ?2, …) tail`` as (``INSERT … SELECT <the row's items> FROM json_each(?1) WHERE true
    tail``, its number of values), or None when ``sql`` is anything else (an UPDATE, expressions among the
    values, placeholders after them). ``WHERE true`` is what SQLite asks of an upsert's SELECT, to tell
    ``ON CONFLICT`` from a join."""
    if sql in _bulk_forms:
        return _bulk_forms[sql]
    form = None
    match = _INSERT_VALUES.match(sql)
    if match and "?" not in match.group(3) and "$" not in match.group(3):
        items = [item.strip() for item in match.group(2).split(",")]
        numbers = [_PLACEHOLDER.match(item) for item in items]
        if all(numbers) and all(not n.group(1) or int(n.group(1)) == i + 1 for i, n in enumerate(numbers)):
            values = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(items)))
            form = f"{match.group(1)} SELECT {values} FROM json_each(?1) WHERE true{match.group(3)}", len(items)
    _bulk_forms[sql] = form
    return form


def execute_many(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """``db.executemany(sql, rows)``, as one statement when ``sql`` is a plain multi-row INSERT.

    The rows go as JSON: text, integers, finite floats and NULL come back as the same SQL values. Anything
    JSON cannot carry the same way (bytes, NaN, infinities, text with a NUL in it) falls back to
    ``executemany``.
    """
    form = bulk_form(sql) if len(rows) >= BULK_MIN_ROWS else None
    if form is not None and all(len(row) == form[1] for row in rows):  # else executemany says what is wrong
        try:
            # Not ASCII-escaped: a lone surrogate (which JSON could escape, and SQLite would then store as
            # invalid UTF-8 that no reader can decode) fails the bind, as it fails executemany.
            payload = json.dumps(rows, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError):
            pass
        else:
            if "\\u0000" not in payload:  # SQLite's JSON functions would cut such a text short at the NUL
                db.execute(form[0], (payload,))
                return
    db.executemany(sql, rows)

"""Many rows in a few statements (``shared.sqlite.execute_many``): the same rows as ``executemany``.

The point is that a batch is a few statements of many rows each (the GIL is let go once per statement, not
once per row), so that is asserted through SQLite's own trace of the statements it ran; everything else is
asserted by writing the same rows both ways and comparing what the database holds, values and SQL types.
"""

from __future__ import annotations

import math
import random
import sqlite3
import time

import pytest

from shared.sqlite import BULK_MIN_ROWS, MAX_ROWS, bulk_form, execute_many

TABLE = ("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT UNIQUE, a REAL, b INTEGER, c TEXT, d,"
         " hits INTEGER NOT NULL DEFAULT 0)")
UPSERT = "INSERT INTO t (k, a, b, c, d) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (k) DO UPDATE SET hits = hits + 1"
EVERYTHING = "SELECT id, k, a, b, c, d, typeof(a), typeof(b), typeof(c), typeof(d), hits FROM t ORDER BY id"


def database() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute(TABLE)
    return db


def both_ways(sql: str, rows: list) -> tuple[list, list]:
    ours, theirs = database(), database()
    execute_many(ours, sql, rows)
    theirs.executemany(sql, rows)
    return ours.execute(EVERYTHING).fetchall(), theirs.execute(EVERYTHING).fetchall()


def statements_run(sql: str, rows: list, db: sqlite3.Connection | None = None) -> list[str]:
    db = db or database()
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    execute_many(db, sql, rows)
    return seen


AWKWARD_TEXT = [
    "plain", "", "héllo wörld", "emoji \U0001f600 and 中文", 'quotes " and \' and \\ backslash',
    "line\nbreak\tand tab", "'); DROP TABLE t; --", "$[0]", "[1, 2]", '{"json": "lookalike"}', "null", "NaN",
]
FLOATS = [0.0, -0.0, 1.5, 1e-300, 1.7976931348623157e308, 5e-324, 1795644914.00401, 1795644914.1234567,
          0.1, 1 / 3, -2.5e-7, 123456789.123456789]


def test_the_same_rows_and_types_as_executemany() -> None:
    rows = [(f"k{i}", FLOATS[i % len(FLOATS)], [0, 1, -1, 2**63 - 1, -2**63, 10**15][i % 6],
             AWKWARD_TEXT[i % len(AWKWARD_TEXT)], [None, True, False, 7, 2.0, "x"][i % 6])
            for i in range(60)]
    ours, theirs = both_ways(UPSERT, rows)
    assert ours == theirs
    assert len(ours) == 60


def test_random_text_comes_back_the_same() -> None:
    """Any code point, NUL included; lone surrogates are refused both ways (below)."""
    chooser = random.Random(14)
    alphabet = [chr(c) for c in range(0, 0x250)] + ["\u2028", "\u2029", "\ufeff", "\U0001f600", "\U0010fffd"]
    rows = [(f"k{i}", chooser.random() * 10**chooser.randint(-5, 12), chooser.randint(-2**63, 2**63 - 1),
             "".join(chooser.choices(alphabet, k=chooser.randint(0, 40))), None) for i in range(2000)]
    assert len(statements_run(UPSERT, rows)) == 2000 // MAX_ROWS + bin(2000 % MAX_ROWS).count("1")
    ours, theirs = both_ways(UPSERT, rows)
    assert ours == theirs


def test_duplicates_within_a_batch_upsert_in_order() -> None:
    rows = [("same", 1.0, 1, "first", None), ("other", 2.0, 2, "x", None), ("same", 3.0, 3, "second", None),
            ("same", 4.0, 4, "third", None)]
    ours, theirs = both_ways(UPSERT, rows)
    assert ours == theirs
    assert [(k, c, hits) for _, k, _, _, c, *_, hits in ours] == [("same", "first", 2), ("other", "x", 0)]


def test_or_ignore_and_autoincrement_ids_follow_the_rows() -> None:
    sql = "INSERT OR IGNORE INTO t (k, c) VALUES (?, ?)"
    rows = [(f"k{i % 7}", f"row {i}") for i in range(20)]
    ours, theirs = both_ways(sql, rows)
    assert ours == theirs
    assert [row[1] for row in ours] == [f"k{i}" for i in range(7)]


@pytest.mark.parametrize("count", [2, 3, 255, 256, 257, 500, 1000])
def test_a_batch_is_a_few_statements_of_many_rows(count: int) -> None:
    """A power of two rows per statement, the largest first: 500 rows = 256 + 128 + 64 + 32 + 16 + 4."""
    rows = [(f"k{i}", 1.0, i, "x", None) for i in range(count)]
    run = statements_run(UPSERT, rows)
    sizes = [statement.count("), (") + 1 for statement in run]
    assert sum(sizes) == count and sizes == sorted(sizes, reverse=True)
    assert all(size & (size - 1) == 0 and size <= MAX_ROWS for size in sizes)
    assert len(run) == count // MAX_ROWS + bin(count % MAX_ROWS).count("1")
    ours, theirs = both_ways(UPSERT, rows)
    assert ours == theirs


def test_fewer_rows_per_statement_where_sqlite_allows_fewer_variables() -> None:
    db = database()
    db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 23)  # four rows of five values
    rows = [(f"k{i}", 1.0, i, "x", None) for i in range(10)]
    run = statements_run(UPSERT, rows, db)
    assert [statement.count("), (") + 1 for statement in run] == [4, 4, 2]
    assert [k for (k,) in db.execute("SELECT k FROM t ORDER BY id")] == [f"k{i}" for i in range(10)]


def test_small_batches_and_other_statements_go_row_by_row() -> None:
    few = [(f"k{i}", 1.0, i, "x", None) for i in range(BULK_MIN_ROWS - 1)]
    assert len(statements_run(UPSERT, few)) == len(few)
    update = "UPDATE t SET hits = hits + 1 WHERE k = ?"
    assert bulk_form(update) is None
    assert len(statements_run(update, [(f"k{i}",) for i in range(10)])) == 10


@pytest.mark.parametrize("sql", [
    "INSERT INTO t (k, b) VALUES (?, 1 + ?)",  # an expression among the values
    "INSERT INTO t (k, b) VALUES (?2, ?1)",  # placeholders out of order
    "INSERT INTO t (k, b) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET b = ?",  # a placeholder after the values
    "INSERT INTO t (k, b) SELECT k, b FROM t",
    "DELETE FROM t WHERE k = ?",
])
def test_statements_it_leaves_alone(sql: str) -> None:
    assert bulk_form(sql) is None


def test_blobs_nan_and_infinities_are_stored_as_executemany_stores_them() -> None:
    sql = "INSERT INTO t (k, d) VALUES (?, ?)"
    blobs = [(f"k{i}", bytes([i, 0, 255])) for i in range(10)]
    ours, theirs = both_ways(sql, blobs)
    assert ours == theirs and ours[0][5] == b"\x00\x00\xff"
    assert len(statements_run(sql, blobs)) == 2  # 8 + 2

    # A NaN is stored as NULL by executemany, and must not become something else here.
    odd = [(f"k{i}", v) for i, v in enumerate([math.nan, math.inf, -math.inf, 1.0, 2.0])]
    ours, theirs = both_ways(sql, odd)
    assert ours == theirs


def test_a_lone_surrogate_is_refused_as_executemany_refuses_it() -> None:
    """JSON could carry it escaped, and SQLite would store it as invalid UTF-8 that no reader decodes."""
    rows = [(f"k{i}", 1.0, i, "x", None) for i in range(5)] + [("bad", 1.0, 1, "x\ud800y", None)]
    for write in (execute_many, lambda db, sql, rows: db.executemany(sql, rows)):
        db = database()
        with pytest.raises(UnicodeEncodeError):
            write(db, UPSERT, rows)
        assert "bad" not in [k for (k,) in db.execute("SELECT k FROM t")]  # and what is there reads back


def test_text_with_a_nul_is_kept_whole() -> None:
    rows = [(f"k{i}", 1.0, i, "before \x00 after" if i == 3 else "x", None) for i in range(6)]
    ours, theirs = both_ways(UPSERT, rows)
    assert ours == theirs and ours[3][4] == "before \x00 after"


def test_a_row_of_the_wrong_length_is_refused_as_executemany_refuses_it() -> None:
    rows = [(f"k{i}", 1.0, i, "x", None) for i in range(5)] + [("short", 1.0)]
    db = database()
    with pytest.raises(sqlite3.ProgrammingError):
        execute_many(db, UPSERT, rows)


def batch_of_logs(key_id: str, count: int):
    from api.store import MinerLog, RequestLog

    now = time.time()
    return [RequestLog(request_id=f"req-{i}", key_id=key_id, created_at=now + i / 1000, path="/v1/chat/completions",
                       status=200, outcome="ok", latency_ms=1.5, task="inference", model="default",
                       error="quote ' and \" and emoji \U0001f600" if i % 3 == 0 else None, prompt_tokens=10 + i,
                       completion_tokens=20, charged=1, miner_uid=1, miner_hotkey="hk",
                       miners=[MinerLog(uid=1, hotkey="hk", outcome="ok", latency_ms=0.5 + i, winner=True),
                               MinerLog(uid=2, hotkey="hk2", outcome="timeout", error="no answer in time")])
            for i in range(count)]


async def test_a_request_log_batch_is_one_trip_and_a_few_inserts_per_table(database):
    """The API's request-log batch (``Store.record``) on both backends: every row and counter lands; on
    SQLite the batch is one plan and each table's rows a few statements of many rows."""
    from api.key_admin import KeyAdmin
    from api.key_fields import KeySpec
    from api.store import open_store

    store = await open_store(*database)
    try:
        _, key = await KeyAdmin(store).create(KeySpec(name="bulk"))
        run: list[str] = []
        if store.db.dialect == "sqlite":
            store.db._db.set_trace_callback(run.append)
        logs = batch_of_logs(key.id, 120)
        await store.record(logs[:70])
        await store.record(logs[70:])
        rows = await store.db.fetch("SELECT request_id, error, prompt_tokens FROM request_logs ORDER BY created_at")
        assert [(r[0], r[1], r[2]) for r in rows] == [(log.request_id, log.error, log.prompt_tokens) for log in logs]
        (miners,) = await store.db.fetchrow("SELECT COUNT(*) FROM miner_logs")
        assert miners == 240
        (usage,) = await store.db.fetchrow("SELECT SUM(requests) FROM usage_daily WHERE key_id = $1", key.id)
        assert usage == 120
        if store.db.dialect == "sqlite":
            inserts = [s for s in run if s.startswith("INSERT INTO request_logs")]
            assert len(inserts) == 6  # 70 = 64 + 4 + 2, then 50 = 32 + 16 + 2
            assert len([s for s in run if s.startswith("INSERT INTO miner_logs")]) == 6  # 140 = 128+8+4; 100 = 64+32+4
    finally:
        await store.close()


def test_an_integer_beyond_64_bits_is_refused_as_executemany_refuses_it() -> None:
    rows = [(f"k{i}", 1.0, i, "x", None) for i in range(5)] + [("big", 1.0, 2**70, "x", None)]
    for write in (execute_many, lambda db, sql, rows: db.executemany(sql, rows)):
        db = database()
        with pytest.raises(OverflowError):
            write(db, UPSERT, rows)

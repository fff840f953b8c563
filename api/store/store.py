"""Everything the API keeps: keys, credits, usage, request logs, rate-limit events.

One class over either database (see ``drivers``). What must be exact under
concurrency is one statement or one locked transaction in the database, never
a read-then-write in Python:

- credits: ``UPDATE … SET credits = credits - n WHERE credits >= n RETURNING``,
  so a balance never goes negative, whatever the number of workers and hosts;
- rate limits without Redis: count and insert inside a transaction holding the
  key's lock (an advisory lock on PostgreSQL, the write lock on SQLite).

Usage counters and logs arrive in batches from ``Recorder``: one transaction
per batch, off the request path.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Optional

from ..keys import LARGEST_COUNT, KeyRecord
from ..ratelimit import Decision, Window, decide
from . import rollups
from .drivers import Driver
from .migrations import LEGACY_KEYS_COLUMNS, MIGRATIONS, statements
from .plans import Execute, ExecuteMany, FetchRow, Plan
from .records import (
    KEY_COLUMNS,
    LOG_COLUMNS,
    MINER_COLUMNS,
    RequestLog,
    dump_list,
    dump_windows,
    key_from_row,
    log_from_row,
    log_row,
    miner_from_row,
    miner_rows,
)
from .sessions import Sessions

MIGRATION_LOCK = "api-store-migrations"
# Columns an operator may change, and how a Python value is stored.
EDITABLE = {
    "name": str,
    "enabled": int,
    "expires_at": lambda v: None if v is None else float(v),
    "credits": lambda v: None if v is None else int(v),
    "rate_limits": lambda v: dump_windows(tuple(v or ())),
    "allowed_tasks": lambda v: dump_list(None if v is None else tuple(v)),
    "allowed_models": lambda v: dump_list(None if v is None else tuple(v)),
    "token_quota": lambda v: None if v is None else int(v),
    "tpm_limit": lambda v: None if v is None else int(v),
}


def placeholders(start: int, count: int) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


_days: dict[int, str] = {}


def day_of(timestamp: float) -> str:
    """The UTC day of ``timestamp`` as ``YYYY-MM-DD`` (remembered: every request log of a day asks for it)."""
    number = int(timestamp // 86400)
    day = _days.get(number)
    if day is None:
        if len(_days) > 4096:
            _days.clear()
        day = _days[number] = datetime.fromtimestamp(number * 86400, timezone.utc).strftime("%Y-%m-%d")
    return day



# -- the hot transactions, as plans (``api.store.plans``): one trip to SQLite's thread each, or less ----------
def debit_plan(key_id: str, amount: int) -> Plan[Optional[int]]:
    row = yield FetchRow("UPDATE api_keys SET credits = credits - $1, credits_used = credits_used + $1"
                         " WHERE id = $2 AND credits IS NOT NULL AND credits >= $1 RETURNING credits", amount, key_id)
    return None if row is None else row["credits"]


def refund_plan(key_id: str, amount: int) -> Plan[None]:
    yield Execute("UPDATE api_keys SET credits = credits + $1, credits_used = credits_used - $1"
                  " WHERE id = $2 AND credits IS NOT NULL", amount, key_id)


def rate_hit_plan(key_id: str, windows: list[Window], commit: bool, weight: int) -> Plan[Decision]:
    """The sliding log's check (and, when ``commit`` and admitted, ``weight`` new events), in one transaction.

    Events are numbered per key (``n``: 1, 2, 3, … in time order; deleting the oldest leaves the rest
    contiguous), so a window's count is the newest ``n`` minus the first ``n`` inside the window, plus one:
    index look-ups, whatever the number of events. A new event is stamped no earlier than the newest one, so
    the numbering stays in time order even when hosts' clocks disagree.
    """
    longest = max(w.seconds for w in windows)
    now = time.time()  # read inside the transaction, under the lock
    if commit:
        yield Execute("DELETE FROM rate_log WHERE key_id = $1 AND at <= $2", key_id, now - longest)
    newest = yield FetchRow("SELECT n, at FROM rate_log WHERE key_id = $1 ORDER BY n DESC LIMIT 1", key_id)
    total = newest["n"] if newest is not None else 0
    counts, resets, retries = [], [], []
    for window in windows:
        since = now - window.seconds
        first = yield FetchRow("SELECT n, at FROM rate_log WHERE key_id = $1 AND at > $2 ORDER BY at, n LIMIT 1",
                               key_id, since)
        count = 0 if first is None else total - first["n"] + 1
        retry = 0.0
        if count + weight > window.limit:
            index = count - window.limit + weight - 1  # the event whose leaving makes room, from the first
            nth = None if index >= count else (yield FetchRow(
                "SELECT at FROM rate_log WHERE key_id = $1 AND n = $2", key_id, first["n"] + index))
            retry = float(window.seconds) if nth is None else nth["at"] + window.seconds - now
        counts.append(count)
        resets.append(first["at"] + window.seconds - now if count else float(window.seconds))
        retries.append(retry)
    decision = decide(windows, counts, resets, retries, admitted_now=commit, weight=weight)
    if decision.allowed and commit:
        at = now if newest is None else max(now, newest["at"])
        yield ExecuteMany("INSERT INTO rate_log (key_id, at, n) VALUES ($1, $2, $3)",
                          [(key_id, at, total + i) for i in range(1, weight + 1)])
    return decision


def record_plan(logs: list[RequestLog]) -> Plan[None]:
    """A batch of request logs, their miners, the keys' counters, the daily usage and the roll-ups.

    A plan, not ``async with transaction()``: on SQLite the batch is one trip to the store's thread and each
    table's rows a few statements of many rows (``shared.sqlite.execute_many``), so that thread asks the event
    loop for the GIL a few times per batch instead of once or twice per row, while the loop is serving requests.
    """
    totals: dict[str, list] = {}
    daily: dict[tuple[str, str], list] = {}
    for log in logs:
        for bucket in (totals.setdefault(log.key_id, [0, 0, 0, 0, 0.0]),
                       daily.setdefault((log.key_id, day_of(log.created_at)), [0, 0, 0, 0, 0.0])):
            bucket[0] += 1
            bucket[1] += log.prompt_tokens
            bucket[2] += log.completion_tokens
            bucket[3] += log.charged
            bucket[4] = max(bucket[4], log.created_at)
    yield ExecuteMany(f"INSERT INTO request_logs ({LOG_COLUMNS}) VALUES ({placeholders(1, 18)})"
                      " ON CONFLICT (request_id) DO NOTHING", [log_row(log) for log in logs])
    miners = [row for log in logs for row in miner_rows(log)]
    if miners:
        yield ExecuteMany(f"INSERT INTO miner_logs ({MINER_COLUMNS}) VALUES ({placeholders(1, 11)})"
                          " ON CONFLICT (request_id, position) DO NOTHING", miners)
    yield ExecuteMany(
        "UPDATE api_keys SET requests = requests + $1, prompt_tokens = prompt_tokens + $2,"
        " completion_tokens = completion_tokens + $3, charged = charged + $4,"
        " last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $5 THEN $5 ELSE last_used_at END"
        " WHERE id = $6",
        [(r, p, c, ch, float(at), key_id) for key_id, (r, p, c, ch, at) in totals.items()])
    yield ExecuteMany(
        "INSERT INTO usage_daily (key_id, day, requests, prompt_tokens, completion_tokens, charged)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_id, day) DO UPDATE SET"
        " requests = usage_daily.requests + excluded.requests,"
        " prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens,"
        " completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens,"
        " charged = usage_daily.charged + excluded.charged",
        [(key_id, day, r, p, c, ch) for (key_id, day), (r, p, c, ch, _) in daily.items()])
    yield from rollups.write(rollups.rollup(logs))


class Store:
    def __init__(self, db: Driver):
        self.db = db
        self.rollups = rollups.Rollups(db)  # per-minute counters for the dashboard
        self.sessions = Sessions(db)  # dashboard sessions

    async def ping(self) -> None:
        """One round trip (readiness probes); raises when the database is unreachable."""
        await self.db.fetchrow("SELECT 1 AS one")

    @property
    def dialect(self) -> str:
        return self.db.dialect

    async def open(self) -> "Store":
        await self.db.open()
        await self.migrate()
        return self

    async def close(self) -> None:
        await self.db.close()

    # -- schema ---------------------------------------------------------------------------------
    async def migrate(self) -> int:
        """Apply the migrations this store has not seen; returns the version reached."""
        async with self.db.transaction(lock=MIGRATION_LOCK) as tx:
            await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL,"
                             " applied_at DOUBLE PRECISION NOT NULL, description TEXT NOT NULL)")
            row = await tx.fetchrow("SELECT MAX(version) AS v FROM schema_version")
            current = row["v"] or 0
            legacy = await self._legacy_keys(tx) if current == 0 else False
            for version, description, version_statements in MIGRATIONS:
                if version <= current:
                    continue
                for sql in statements(self.dialect, version_statements):
                    await tx.execute(sql)
                await tx.execute("INSERT INTO schema_version (version, applied_at, description) VALUES ($1, $2, $3)",
                                 version, time.time(), description)
                current = version
            if legacy:
                await self._import_legacy_keys(tx)
            return current

    async def _legacy_keys(self, tx: Any) -> bool:
        """The first release's SQLite key table: renamed, and its keys imported after migration 1."""
        if self.dialect != "sqlite":
            return False
        columns = {row["name"] for row in await tx.fetch("PRAGMA table_info(api_keys)")}
        if columns and LEGACY_KEYS_COLUMNS <= columns and "id" not in columns:
            await tx.execute("ALTER TABLE api_keys RENAME TO api_keys_legacy")
            return True
        return False

    async def _import_legacy_keys(self, tx: Any) -> None:
        from ..keys import new_key_id

        for row in await tx.fetch("SELECT key_hash, key_hint, name, rate_limit, enabled, created_at"
                                  " FROM api_keys_legacy"):
            windows = (Window(row["rate_limit"], 60),) if row["rate_limit"] else ()
            await tx.execute(
                "INSERT INTO api_keys (id, key_hash, key_hint, name, enabled, created_at, updated_at, rate_limits)"
                " VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
                new_key_id(), row["key_hash"], row["key_hint"], row["name"], row["enabled"], row["created_at"],
                dump_windows(windows))
        await tx.execute("DROP TABLE api_keys_legacy")

    # -- keys -----------------------------------------------------------------------------------
    async def insert_key(self, key: KeyRecord) -> None:
        await self.db.execute(
            "INSERT INTO api_keys (id, key_hash, key_hint, name, enabled, created_at, updated_at, expires_at,"
            " credits, rate_limits, allowed_tasks, allowed_models, token_quota, tpm_limit) VALUES ($1, $2, $3, $4,"
            " $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            key.id, key.key_hash, key.key_hint, key.name, int(key.enabled), float(key.created_at),
            float(key.updated_at), None if key.expires_at is None else float(key.expires_at), key.credits,
            dump_windows(key.rate_limits), dump_list(key.allowed_tasks), dump_list(key.allowed_models),
            key.token_quota, key.tpm_limit)

    async def key_by_hash(self, key_hash: str) -> Optional[KeyRecord]:
        row = await self.db.fetchrow(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1", key_hash)
        return key_from_row(row) if row else None

    async def key_by_id(self, key_id: str) -> Optional[KeyRecord]:
        row = await self.db.fetchrow(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1", key_id)
        return key_from_row(row) if row else None

    async def list_keys(self, limit: int = 100, offset: int = 0) -> list[KeyRecord]:
        rows = await self.db.fetch(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id LIMIT $1 OFFSET $2",
                                   limit, offset)
        return [key_from_row(r) for r in rows]

    async def update_key(self, key_id: str, changes: dict[str, Any], add_credits: int = 0) -> Optional[KeyRecord]:
        """Set the given columns (see ``EDITABLE``); ``add_credits`` tops a finite balance up atomically."""
        if add_credits and "credits" in changes:
            value = changes["credits"]
            changes = {**changes, "credits": None if value is None else min(max(0, value + add_credits), LARGEST_COUNT)}
            add_credits = 0
        sets, args = ["updated_at = $1"], [time.time()]
        for column, value in changes.items():
            args.append(EDITABLE[column](value))
            sets.append(f"{column} = ${len(args)}")
        if add_credits:
            args.append(add_credits)
            sets.append(f"credits = CASE WHEN credits IS NULL THEN NULL"
                        f" ELSE MIN_OF(MAX_OF(credits + ${len(args)}, 0), {LARGEST_COUNT}) END")
        args.append(key_id)
        sql = f"UPDATE api_keys SET {', '.join(sets)} WHERE id = ${len(args)}"
        sql = sql.replace("MAX_OF", "MAX" if self.dialect == "sqlite" else "GREATEST")
        sql = sql.replace("MIN_OF", "MIN" if self.dialect == "sqlite" else "LEAST")
        if await self.db.execute(sql, *args) != 1:
            return None
        await self.db.bump_keys()
        return await self.key_by_id(key_id)

    async def delete_key(self, key_id: str) -> bool:
        deleted = await self.db.execute("DELETE FROM api_keys WHERE id = $1", key_id) == 1
        await self.db.bump_keys()
        return deleted

    def keys_generation(self) -> int:
        return self.db.keys_generation()

    # -- credits --------------------------------------------------------------------------------
    async def debit(self, key_id: str, amount: int) -> Optional[int]:
        """Take ``amount`` credits if the key has them; the balance left, or None when it had too few."""
        return await self.db.run(debit_plan(key_id, amount), atomic=False)

    async def refund(self, key_id: str, amount: int) -> None:
        await self.db.run(refund_plan(key_id, amount), atomic=False)

    # -- rate limits (when there is no Redis) ---------------------------------------------------
    async def rate_hit(self, key_id: str, windows: list[Window], commit: bool = True, weight: int = 1) -> Decision:
        return await self.db.run(rate_hit_plan(key_id, windows, commit, weight), lock=f"ratelimit:{key_id}")

    # -- usage and logs -------------------------------------------------------------------------
    async def record(self, logs: list[RequestLog]) -> None:
        """Write a batch of request logs and add their usage to the keys' counters, in one transaction."""
        if logs:
            await self.db.run(record_plan(logs))

    async def daily_usage(self, key_id: Optional[str], since: Optional[float] = None,
                          until: Optional[float] = None) -> list[dict]:
        where, args = ["1 = 1"], []
        if key_id is not None:
            args.append(key_id)
            where.append(f"key_id = ${len(args)}")
        if since is not None:
            args.append(day_of(since))
            where.append(f"day >= ${len(args)}")
        if until is not None:
            args.append(day_of(until))
            where.append(f"day <= ${len(args)}")
        rows = await self.db.fetch(
            "SELECT key_id, day, requests, prompt_tokens, completion_tokens, charged FROM usage_daily"
            f" WHERE {' AND '.join(where)} ORDER BY day, key_id", *args)
        return [dict(key_id=r["key_id"], day=r["day"], requests=r["requests"], prompt_tokens=r["prompt_tokens"],
                     completion_tokens=r["completion_tokens"], charged=r["charged"]) for r in rows]

    async def query_logs(self, *, key_id: Optional[str] = None, since: Optional[float] = None,
                         until: Optional[float] = None, uid: Optional[int] = None, hotkey: Optional[str] = None,
                         status: Optional[int] = None, limit: int = 100, request_id: Optional[str] = None,
                         status_range: Optional[tuple[int, int]] = None) -> list[RequestLog]:
        """Newest first; ``uid``/``hotkey`` keep the requests that queried that miner; ``status_range`` is
        inclusive (``(500, 599)``: server errors)."""
        where, args = ["1 = 1"], []

        def add(condition: str, value: Any) -> None:
            args.append(value)
            where.append(condition.replace("?", f"${len(args)}"))

        if key_id is not None:
            add("key_id = ?", key_id)
        if since is not None:
            add("created_at >= ?", float(since))
        if until is not None:
            add("created_at < ?", float(until))
        if status is not None:
            add("status = ?", status)
        if status_range is not None:
            add("status >= ?", status_range[0])
            add("status <= ?", status_range[1])
        if request_id is not None:
            add("request_id = ?", request_id)
        if uid is not None:
            add("request_id IN (SELECT request_id FROM miner_logs WHERE uid = ?)", uid)
        if hotkey is not None:
            add("request_id IN (SELECT request_id FROM miner_logs WHERE hotkey = ?)", hotkey)
        args.append(limit)
        rows = await self.db.fetch(f"SELECT {LOG_COLUMNS} FROM request_logs WHERE {' AND '.join(where)}"
                                   f" ORDER BY created_at DESC LIMIT ${len(args)}", *args)
        logs = [log_from_row(r) for r in rows]
        if logs:
            by_id = {log.request_id: log for log in logs}
            ids = list(by_id)
            for row in await self.db.fetch(f"SELECT {MINER_COLUMNS} FROM miner_logs WHERE request_id IN"
                                           f" ({placeholders(1, len(ids))}) ORDER BY request_id, position", *ids):
                by_id[row["request_id"]].miners.append(miner_from_row(row))
        return logs

    async def prune(self, before: float) -> int:
        """Delete request logs (and their miner rows) older than ``before``; how many requests went.

        Roll-ups go too, but never the last two days: the dashboard charts a day even when logs are kept less.
        """
        async with self.db.transaction() as tx:
            await self.rollups.prune(tx, min(before, time.time() - 2 * 86400))
            await tx.execute("DELETE FROM miner_logs WHERE created_at < $1", float(before))
            return await tx.execute("DELETE FROM request_logs WHERE created_at < $1", float(before))

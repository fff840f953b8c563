"""The two databases the store runs on, behind one small async interface.

    db = SqliteDriver(Path(".data/api.sqlite"))          # zero set-up, one host
    db = PostgresDriver("postgresql://…", schema="gw")   # any number of hosts
    await db.open()
    rows = await db.fetch("SELECT … WHERE id = $1", key_id)
    async with db.transaction(lock=key_id) as tx:         # serialised with every other holder of that lock
        await tx.execute("UPDATE …", …)
    balance = await db.run(debit_plan(key_id, 1))         # a transaction in one go (``api.store.plans``)

SQL is written once, with PostgreSQL's ``$1`` placeholders; the SQLite driver
rewrites them to ``?1``. SQLite runs on one thread per process (sqlite3 is
blocking), in WAL mode so readers never wait; ``BEGIN IMMEDIATE`` takes the
file's write lock, which serialises writers across processes too, so a
transaction on SQLite is exclusive whatever its ``lock`` says. The hot
transactions (debits, refunds, rate-limit checks) are plans (``api.store.plans``):
on SQLite the plans that queue while one runs share the next trip to that thread
and one commit.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Optional, Protocol, Sequence

from shared.sqlite import execute_many, open_shared_sqlite

from .key_stamp import KeyStamp
from .plans import Execute, ExecuteMany, FetchRow, Plan, Statement, T, drive_async, drive_sync

PLACEHOLDER = re.compile(r"\$(\d+)")


class Connection(Protocol):
    async def fetch(self, sql: str, *args: Any) -> list[Any]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Optional[Any]: ...
    async def execute(self, sql: str, *args: Any) -> int: ...  # rows affected
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Driver(Connection, Protocol):
    dialect: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def transaction(self, lock: Optional[str] = None) -> Any: ...  # async context manager → Connection

    async def run(self, plan: Plan[T], *, lock: Optional[str] = None, atomic: bool = True) -> T:
        """Run a plan as one transaction (``lock``: as for ``transaction``); its result. ``atomic=False``: a
        plan of one statement, which needs no transaction of its own (PostgreSQL then skips BEGIN/COMMIT)."""

    async def bump_keys(self) -> None:
        """Tell every worker that some key changed (see ``keys.KeyCache``)."""

    def keys_generation(self) -> int:
        """A number that changes after every ``bump_keys``, in any process; cheap enough for every request."""


class _SqliteConnection:
    """Statements run on the driver's one thread; only the driver hands these out, under its lock."""

    def __init__(self, driver: "SqliteDriver"):
        self._driver = driver

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self._driver._run(lambda db: db.execute(self._driver.sql(sql), args).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Optional[Any]:
        # fetchall, not fetchone: an unfinished ``UPDATE … RETURNING`` would keep its write lock
        rows = await self._driver._run(lambda db: db.execute(self._driver.sql(sql), args).fetchall())
        return rows[0] if rows else None

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._driver._run(lambda db: db.execute(self._driver.sql(sql), args).rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._driver._run(lambda db: execute_many(db, self._driver.sql(sql), rows))


class SqliteDriver:
    dialect = "sqlite"

    def __init__(self, path: Path):
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-store")
        self._db: Optional[sqlite3.Connection] = None
        self._lock: Optional[asyncio.Lock] = None
        self._conn = _SqliteConnection(self)
        self._rewritten: dict[str, str] = {}
        self.stamp_path = str(self.path.with_name(self.path.name + ".keys-changed"))
        self._stamp: Optional[KeyStamp] = None
        self._plans: list[tuple[Plan, asyncio.Future, bool]] = []  # (plan, its result, atomic): the next commit
        self._committing = False
        self._committer: Optional[asyncio.Task] = None  # referenced, so that it is not collected mid-way

    async def bump_keys(self) -> None:
        self._stamp.bump()

    def keys_generation(self) -> int:
        return self._stamp.value()

    def sql(self, sql: str) -> str:
        rewritten = self._rewritten.get(sql)
        if rewritten is None:
            rewritten = self._rewritten[sql] = PLACEHOLDER.sub(r"?\1", sql)
        return rewritten

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            db = open_shared_sqlite(self.path, timeout=30.0)
            db.row_factory = sqlite3.Row
            return db

        self._lock = asyncio.Lock()
        self._db = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        self._stamp = KeyStamp(self.stamp_path)

    async def _run(self, work) -> Any:
        # Shielded: once queued, a statement runs even if the caller is cancelled, so the
        # connection never holds half a transaction that nobody will finish.
        future = asyncio.get_running_loop().run_in_executor(self._executor, work, self._db)
        return await asyncio.shield(future)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._lock:
            return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Optional[Any]:
        async with self._lock:
            return await self._conn.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            return await self._conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self._lock:
            await self._conn.executemany(sql, rows)

    async def run(self, plan: Plan[T], *, lock: Optional[str] = None, atomic: bool = True) -> T:
        """Run the plan at once when nothing else is, else queue it for the next group commit; its result.
        (``lock`` changes nothing here: every SQLite transaction takes the file's write lock.)"""
        if not self._committing and not self._plans:
            # Nothing queued or running: this plan goes now, in the caller's task (no loop turn spent waiting for
            # company that, one request at a time, never comes); plans arriving meanwhile queue behind it.
            self._committing = True
            try:
                async with self._lock:
                    [(ok, value)] = await self._run(lambda db: self._run_plans(db, [(plan, None, atomic)]))
            finally:
                self._committing = False
                if self._plans:
                    self._committing = True
                    self._committer = asyncio.get_running_loop().create_task(self._commit_plans())
            if not ok:
                raise value
            return value
        future = asyncio.get_running_loop().create_future()
        self._plans.append((plan, future, atomic))
        if not self._committing:
            self._committing = True
            self._committer = asyncio.get_running_loop().create_task(self._commit_plans())
        # Shielded like every statement here: once queued, a plan runs even if its caller is cancelled.
        return await asyncio.shield(future)

    async def _commit_plans(self) -> None:
        """Run what is queued, a batch per trip to the thread, until nothing is left."""
        try:
            async with self._lock:
                while self._plans:
                    batch, self._plans = self._plans, []
                    try:
                        outcomes = await self._run(lambda db: self._run_plans(db, batch))
                    except Exception as exc:  # BEGIN or COMMIT failed: nothing of the batch was written
                        outcomes = [(False, exc)] * len(batch)
                    for (_, future, _), (ok, value) in zip(batch, outcomes):
                        if future.done():
                            continue
                        if ok:
                            future.set_result(value)
                        else:
                            future.set_exception(value)
        finally:
            self._committing = False

    def _run_plans(self, db: sqlite3.Connection, batch: list[tuple[Plan, Any, bool]]) -> list[tuple[bool, Any]]:
        """On the driver's thread: the batch in one transaction, a savepoint per plan (a failed plan undoes only
        itself). A batch of one needs no savepoint, and a lone plan of one statement (not ``atomic``) no
        transaction: SQLite commits a single statement by itself."""
        def statement(step: Statement) -> Any:
            if isinstance(step, ExecuteMany):
                execute_many(db, self.sql(step.sql), step.rows)
                return None
            cursor = db.execute(self.sql(step.sql), step.args)
            if isinstance(step, Execute):
                return cursor.rowcount
            rows = cursor.fetchall()  # fetchall, not fetchone: an unfinished UPDATE … RETURNING keeps its lock
            if isinstance(step, FetchRow):
                return rows[0] if rows else None
            return rows

        def one(plan: Plan) -> tuple[bool, Any]:
            try:
                return True, drive_sync(plan, statement)
            except Exception as exc:
                return False, exc

        if len(batch) == 1 and not batch[0][2]:
            return [one(batch[0][0])]
        outcomes: list[tuple[bool, Any]] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            if len(batch) == 1:
                outcomes.append(one(batch[0][0]))
                db.execute("COMMIT" if outcomes[0][0] else "ROLLBACK")
                return outcomes
            for plan, _, _ in batch:
                db.execute("SAVEPOINT plan")
                outcome = one(plan)
                if not outcome[0]:
                    db.execute("ROLLBACK TO plan")
                db.execute("RELEASE plan")
                outcomes.append(outcome)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes

    @asynccontextmanager
    async def transaction(self, lock: Optional[str] = None) -> AsyncIterator[_SqliteConnection]:
        async with self._lock:
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
            except BaseException:
                # Queued behind whatever is running; no await, so it happens even when cancelled.
                self._executor.submit(lambda: self._db.execute("ROLLBACK"))
                raise
            await self._conn.execute("COMMIT")

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._db.close)
            self._db = None
        if self._stamp is not None:
            self._stamp.close()
            self._stamp = None
        self._executor.shutdown(wait=True)


def _rows_affected(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PostgresConnection:
    def __init__(self, conn: Any):
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Optional[Any]:
        return await self._conn.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        return _rows_affected(await self._conn.execute(sql, *args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)


class PostgresDriver:
    """asyncpg with a small pool; ``schema`` (created if missing) keeps several deployments in one database."""

    dialect = "postgres"

    def __init__(self, url: str, schema: str = "", min_size: int = 1, max_size: int = 10):
        self.url = url
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self._pool: Any = None
        self._listener: Any = None
        self._generation = 0

    async def open(self) -> None:
        import asyncpg

        settings = {"search_path": self.schema} if self.schema else {}
        if self.schema:
            conn = await asyncpg.connect(self.url)
            try:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            except asyncpg.UniqueViolationError:
                pass  # another worker created it at the same moment
            finally:
                await conn.close()
        self._pool = await asyncpg.create_pool(self.url, min_size=self.min_size, max_size=self.max_size,
                                               server_settings=settings)
        try:
            self._listener = await asyncpg.connect(self.url, server_settings=settings)
            await self._listener.add_listener(self.channel, self._notified)
        except (OSError, asyncpg.PostgresError):
            self._listener = None  # keys are still re-read every KEY_CACHE_SECONDS

    @property
    def channel(self) -> str:
        return f"api_keys_changed_{self.schema}" if self.schema else "api_keys_changed"

    def _notified(self, *_: Any) -> None:
        self._generation += 1

    async def bump_keys(self) -> None:
        await self._pool.execute("SELECT pg_notify($1, '')", self.channel)

    def keys_generation(self) -> int:
        return self._generation

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self._pool.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Optional[Any]:
        return await self._pool.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        return _rows_affected(await self._pool.execute(sql, *args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._pool.executemany(sql, rows)

    @asynccontextmanager
    async def transaction(self, lock: Optional[str] = None) -> AsyncIterator[_PostgresConnection]:
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                if lock is not None:
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock)
                yield _PostgresConnection(conn)

    async def run(self, plan: Plan[T], *, lock: Optional[str] = None, atomic: bool = True) -> T:
        if not atomic and lock is None:
            async with self._pool.acquire() as conn:
                return await drive_async(plan, _PostgresConnection(conn))
        async with self.transaction(lock) as tx:
            return await drive_async(plan, tx)

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def open_driver(database_url: str, sqlite_path: Path, schema: str = "") -> Driver:
    """PostgreSQL when ``DATABASE_URL`` says so, else SQLite (``sqlite:///path`` or under ``DATA_DIR``)."""
    if database_url.startswith(("postgres://", "postgresql://")):
        return PostgresDriver(database_url, schema=schema)
    if database_url and not database_url.startswith("sqlite:///"):
        raise ValueError("DATABASE_URL must start with postgresql://, postgres:// or sqlite:///")
    return SqliteDriver(sqlite_path)

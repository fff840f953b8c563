"""Transactions written once, as plans, that each driver runs in one go.

    def debit(key_id, amount) -> Plan[Optional[int]]:
        row = yield FetchRow("UPDATE api_keys SET … RETURNING credits", amount, key_id)
        return None if row is None else row["credits"]

    balance = await db.run(debit(key.id, 1))

A plan is a generator: it yields statements and receives their results, so its
logic (what to read, what to decide, what to write) is plain Python between
them. Why not ``async with db.transaction()``: on SQLite every awaited statement
is a trip to the driver's thread and back, with the write lock held across all
of them; a rate-limit check took five such trips per request, and every other
request's statement waited behind them. A plan runs on that thread from its
first statement to its last in one trip. The SQLite driver runs a plan at once
when nothing else is running, and the plans that queue while one runs together,
in one transaction (each in its own savepoint, so one plan's failure undoes only
its own writes): under load, many requests' debits and rate-limit checks share
one trip and one commit.
On PostgreSQL a plan runs in a transaction on a pooled connection, each statement
awaited as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, Sequence, TypeVar, Union

T = TypeVar("T")


@dataclass(frozen=True)
class Fetch:
    """All rows (a list)."""

    sql: str
    args: tuple = ()

    def __init__(self, sql: str, *args: Any):
        object.__setattr__(self, "sql", sql)
        object.__setattr__(self, "args", args)


class FetchRow(Fetch):
    """The first row, or None."""


class Execute(Fetch):
    """Rows affected (an int)."""


@dataclass(frozen=True)
class ExecuteMany:
    """One statement for each of ``rows``; nothing back."""

    sql: str
    rows: Sequence[Sequence[Any]]


Statement = Union[Fetch, FetchRow, Execute, ExecuteMany]
Plan = Generator[Statement, Any, T]


def drive_sync(plan: Plan[T], run_statement) -> T:
    """Run ``plan`` to its end, each statement through ``run_statement(statement) -> result``."""
    try:
        statement = next(plan)
        while True:
            statement = plan.send(run_statement(statement))
    except StopIteration as done:
        return done.value


async def drive_async(plan: Plan[T], connection: Any) -> T:
    """Run ``plan`` to its end on an async ``Connection`` (``api.store.drivers``)."""
    try:
        statement = next(plan)
        while True:
            if isinstance(statement, ExecuteMany):
                result = await connection.executemany(statement.sql, statement.rows)
            elif isinstance(statement, FetchRow):
                result = await connection.fetchrow(statement.sql, *statement.args)
            elif isinstance(statement, Execute):
                result = await connection.execute(statement.sql, *statement.args)
            else:
                result = await connection.fetch(statement.sql, *statement.args)
            statement = plan.send(result)
    except StopIteration as done:
        return done.value

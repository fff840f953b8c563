"""The API's store: SQLite by default, PostgreSQL when ``DATABASE_URL`` says so."""

from __future__ import annotations

from pathlib import Path

from .drivers import Driver, PostgresDriver, SqliteDriver, open_driver
from .records import MinerLog, RequestLog
from .store import Store

__all__ = ["Driver", "MinerLog", "PostgresDriver", "RequestLog", "SqliteDriver", "Store", "open_store"]


async def open_store(database_url: str, sqlite_path: Path, schema: str = "") -> Store:
    """Connect and migrate; every worker and the CLI call this at start."""
    return await Store(open_driver(database_url, sqlite_path, schema)).open()

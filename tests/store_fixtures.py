"""Real PostgreSQL and Redis for the store tests, isolated per test run.

The servers come from the ``postgres_url`` and ``redis_url`` fixtures (``tests/services.py``: the
configured ones, the machine's, or throwaway ones). Other test runs may share them at the same time,
so every run gets its own PostgreSQL schema and Redis key prefix, and removes them when done.
"""

from __future__ import annotations

import asyncio
import os
import uuid


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def drop_schema(postgres_url: str, schema: str) -> None:
    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def drop_redis_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()

"""The tests' own PostgreSQL and Redis (``tests/services.py``): found, started, or missing with a reason.

A fresh machine has no configured servers; these check that the suite then starts throwaway ones
from the installed binaries, and says what is missing when it cannot.
"""

from __future__ import annotations

import asyncio

import pytest
import services


def unavailable(reason: str):
    def start():
        raise services.Unavailable(reason)

    return start


def test_the_configured_url_wins_and_is_not_replaced_when_it_does_not_answer(monkeypatch):
    monkeypatch.setenv("TEST_EXAMPLE_URL", "x://configured")
    started = []
    service = services.Service("Example", "TEST_EXAMPLE_URL", "x://default", lambda url: url == "x://configured",
                               lambda: started.append(1))
    assert service.url() == "x://configured"
    monkeypatch.setenv("TEST_EXAMPLE_URL", "x://elsewhere")
    broken = services.Service("Example", "TEST_EXAMPLE_URL", "x://default", lambda url: False,
                              lambda: started.append(1))
    with pytest.raises(services.Unavailable, match="TEST_EXAMPLE_URL=x://elsewhere does not answer"):
        broken.url()
    assert not started


def test_the_machines_server_then_a_throwaway_one(monkeypatch):
    monkeypatch.delenv("TEST_EXAMPLE_URL", raising=False)
    monkeypatch.delenv("TEST_SERVICES", raising=False)
    machine = services.Service("Example", "TEST_EXAMPLE_URL", "x://default", lambda url: True, unavailable("no"))
    assert machine.url() == "x://default"
    server = services.Throwaway("x://throwaway", folder=services.Path("/nonexistent"))
    fresh = services.Service("Example", "TEST_EXAMPLE_URL", "x://default", lambda url: False, lambda: server)
    assert fresh.url() == "x://throwaway"
    monkeypatch.setenv("TEST_SERVICES", "throwaway")
    forced = services.Service("Example", "TEST_EXAMPLE_URL", "x://default", lambda url: True, lambda: server)
    assert forced.url() == "x://throwaway"


def test_nothing_at_all_says_what_is_missing_every_time(monkeypatch):
    monkeypatch.delenv("TEST_EXAMPLE_URL", raising=False)
    monkeypatch.delenv("TEST_SERVICES", raising=False)
    attempts = []

    def start():
        attempts.append(1)
        raise services.Unavailable("no example-server binary: install it or set TEST_EXAMPLE_URL")

    service = services.Service("Example", "TEST_EXAMPLE_URL", "x://default", lambda url: False, start)
    for _ in range(2):
        with pytest.raises(services.Unavailable) as caught:
            service.url()
        assert str(caught.value) == ("Example: TEST_EXAMPLE_URL is not set, nothing answers at x://default, and "
                                     "no example-server binary: install it or set TEST_EXAMPLE_URL")
    assert attempts == [1]  # found out once per session


def test_missing_binaries_are_named(monkeypatch):
    monkeypatch.setattr(services, "postgres_bin_dir", lambda: None)
    with pytest.raises(services.Unavailable, match="apt-get install postgresql"):
        services.start_postgres()
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    monkeypatch.setattr(services.os, "access", lambda path, mode: False)
    with pytest.raises(services.Unavailable, match="apt-get install redis-server"):
        services.start_redis()


def test_postgres_runs_as_another_user_when_we_are_root(monkeypatch):
    monkeypatch.setattr(services.shutil, "which", lambda name: "/usr/sbin/runuser" if name == "runuser" else None)
    assert services.as_user("postgres", ["pg_ctl", "start"]) == ["/usr/sbin/runuser", "-u", "postgres", "--",
                                                                 "pg_ctl", "start"]
    assert services.as_user(None, ["pg_ctl", "start"]) == ["pg_ctl", "start"]
    monkeypatch.setattr(services.shutil, "which", lambda name: "/bin/su" if name == "su" else None)
    assert services.as_user("postgres", ["pg_ctl", "-o", "-p 5"]) == ["/bin/su", "-s", "/bin/sh", "postgres", "-c",
                                                                      "pg_ctl -o '-p 5'"]


def test_throwaway_servers_start_answer_and_leave_nothing_behind():
    """What a fresh machine gets: the installed binaries, a temporary folder, a free port."""
    try:
        postgres = services.start_postgres()
    except services.Unavailable as exc:
        pytest.skip(str(exc))
    try:
        import asyncpg

        async def query() -> int:
            conn = await asyncpg.connect(postgres.url)
            try:
                await conn.execute("CREATE SCHEMA probe; CREATE TABLE probe.t (x int); INSERT INTO probe.t VALUES (7)")
                return await conn.fetchval("SELECT x FROM probe.t")
            finally:
                await conn.close()

        assert asyncio.run(query()) == 7
    finally:
        postgres.stop()
    assert not postgres.folder.exists() and not services.postgres_answers(postgres.url)

    try:
        redis_server = services.start_redis()
    except services.Unavailable as exc:
        pytest.skip(str(exc))
    try:
        import redis

        client = redis.Redis.from_url(redis_server.url)
        assert client.set("probe", "1") and client.get("probe") == b"1"
        client.close()
    finally:
        redis_server.stop()
    assert not redis_server.folder.exists() and not services.redis_answers(redis_server.url)

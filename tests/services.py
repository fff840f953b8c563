"""PostgreSQL and Redis for the tests: the configured ones, the machine's, or throwaway ones.

For each service, the first of these that works:

1. ``TEST_POSTGRES_URL`` / ``TEST_REDIS_URL`` when set: used as given (and nothing else is tried);
2. the machine's, on 127.0.0.1 (``postgresql://root@127.0.0.1:5432/test``, ``redis://127.0.0.1:6379/0``),
   when they answer, as CI has them;
3. a throwaway server started from the installed binaries (``initdb``/``pg_ctl`` from ``PATH`` or
   ``/usr/lib/postgresql/*/bin``; ``redis-server``) in a temporary folder on a free port, stopped when
   the test session ends. PostgreSQL refuses to run as root: as root it runs as the ``postgres`` user
   (or ``nobody``) through ``runuser``.

When none works, the tests that need the service are skipped with the reason (what is missing and
how to get it), and fail instead in CI (``CI=true``). ``TEST_SERVICES=throwaway`` skips step 2, to
check step 3 on a machine that has the services::

    TEST_SERVICES=throwaway scripts/test.sh tests/test_store.py

Nothing here starts before a test asks for the service.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

DEFAULT_POSTGRES_URL = "postgresql://root@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PG_ROLE = "gateway_test"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


class Unavailable(Exception):
    """No server for this service: the message says what is missing and how to get it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    default_port = 6379 if parts.scheme.startswith("redis") else 5432
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=timeout):
            return True
    except OSError:
        return False


def postgres_answers(url: str) -> bool:
    """A real check: connect and run a query (a port that answers may still refuse us or lack the database)."""
    if not answers(url):
        return False
    import asyncio

    import asyncpg

    async def check() -> None:
        conn = await asyncpg.connect(url, timeout=3)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    try:
        asyncio.run(check())
        return True
    except Exception:
        return False


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def postgres_bin_dir() -> Path | None:
    """A folder holding ``initdb``, ``pg_ctl`` and ``postgres``: the newest Debian one, else ``PATH``'s."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2])
                        if p.split("/")[-2].isdigit() else 0, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(os.path.realpath(on_path)).parent))
    for folder in candidates:
        if all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def unprivileged_user() -> str | None:
    """Who runs PostgreSQL when we are root (it refuses root)."""
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


@dataclass
class Throwaway:
    """One server we started; ``stop()`` ends it and removes its folder."""

    url: str
    folder: Path
    stop_command: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.stop_command:
            subprocess.run(self.stop_command, capture_output=True, timeout=60)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def as_user(user: str | None, command: list[str]) -> list[str]:
    """``command`` run as ``user`` (we are root), or as ourselves when ``user`` is None."""
    if user is None:
        return command
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--", *command]
    return [shutil.which("su") or "su", "-s", "/bin/sh", user, "-c", shlex.join(command)]


def start_postgres() -> Throwaway:
    folder_bin = postgres_bin_dir()
    if folder_bin is None:
        raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in "
                          "/usr/lib/postgresql/*/bin: install them (Debian: apt-get install postgresql) "
                          "or set TEST_POSTGRES_URL")
    user = None
    if os.geteuid() == 0:
        user = unprivileged_user()
        if user is None or not (shutil.which("runuser") or shutil.which("su")):
            raise Unavailable("running as root, which PostgreSQL refuses, and no 'postgres' or 'nobody' user (or "
                              "no runuser/su) to run it as: run the tests as a normal user or set TEST_POSTGRES_URL")
    # Another user must reach the folder: /tmp rather than a TMPDIR that may sit in root's home.
    folder = Path(tempfile.mkdtemp(prefix="gateway-test-postgres-", dir="/tmp" if user else None))
    data, log = folder / "data", folder / "postgres.log"
    if user is not None:
        info = pwd.getpwnam(user)
        os.chown(folder, info.pw_uid, info.pw_gid)

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(as_user(user, list(command)), capture_output=True, text=True, timeout=120, cwd=folder)

    initdb = run(str(folder_bin / "initdb"), "-D", str(data), "-U", PG_ROLE, "-A", "trust", "-E", "UTF8",
                 "--no-sync", "--no-locale")
    if initdb.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise Unavailable(f"initdb failed: {initdb.stderr.strip()[-500:]}")
    port = free_port()
    options = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off -c max_connections=200")
    started = run(str(folder_bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60",
                  "start")
    server = Throwaway(f"postgresql://{PG_ROLE}@127.0.0.1:{port}/postgres", folder, stop_command=as_user(
        user, [str(folder_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]))
    if started.returncode != 0 or not postgres_answers(server.url):
        detail = log.read_text()[-500:] if log.exists() else started.stderr[-500:]
        server.stop()
        raise Unavailable(f"a throwaway PostgreSQL did not start: {detail.strip()}")
    return server


def start_redis() -> Throwaway:
    binary = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server")
         if os.access(p, os.X_OK)), None)
    if binary is None:
        raise Unavailable("no redis-server binary: install it (Debian: apt-get install redis-server) "
                          "or set TEST_REDIS_URL")
    folder = Path(tempfile.mkdtemp(prefix="gateway-test-redis-"))
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder), "--logfile", str(folder / "redis.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder)
    server = Throwaway(f"redis://127.0.0.1:{port}/0", folder, process=process)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        if redis_answers(server.url):
            return server
        time.sleep(0.05)
    log = (folder / "redis.log").read_text()[-500:] if (folder / "redis.log").exists() else ""
    server.stop()
    raise Unavailable(f"a throwaway redis-server did not start: {log.strip()}")


@dataclass
class Service:
    """One service's URL, found once per session (``url()`` raises ``Unavailable`` every time if none)."""

    name: str
    variable: str
    default_url: str
    check: Callable[[str], bool]
    start: Callable[[], Throwaway]
    _url: str | None = None
    _error: Unavailable | None = None
    _server: Throwaway | None = None

    def url(self) -> str:
        if self._url is None and self._error is None:
            try:
                self._url = self._find()
            except Unavailable as exc:
                self._error = exc
        if self._error is not None:
            raise self._error
        return self._url

    def _find(self) -> str:
        given = os.environ.get(self.variable)
        if given:
            if not self.check(given):
                raise Unavailable(f"{self.name}: {self.variable}={given} does not answer")
            return given
        tried = ""
        if os.environ.get("TEST_SERVICES", "").strip().lower() != "throwaway":
            if self.check(self.default_url):
                return self.default_url
            tried = f"{self.variable} is not set, nothing answers at {self.default_url}, and "
        try:
            self._server = self.start()
        except Unavailable as exc:
            raise Unavailable(f"{self.name}: {tried}{exc}") from None
        atexit.register(self.stop)  # the session fixture stops it first; this covers an interrupted run
        return self._server.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


POSTGRES = Service("PostgreSQL", "TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL, postgres_answers, start_postgres)
REDIS = Service("Redis", "TEST_REDIS_URL", DEFAULT_REDIS_URL, redis_answers, start_redis)

"""Two workers behind one port (``shared.serving.serve``): connections spread over both, a dead worker's share too.

A real ``serve(…, workers=2)`` in its own process, a tiny ASGI app that answers
with the worker's process id, and real keep-alive connections on 127.0.0.1,
opened all at once as a load balancer or a load generator opens its pool.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from localnet.launcher import free_port, stop_group

ROOT = Path(__file__).resolve().parent.parent
APP = '''
import os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
'''
SERVE = '''
import sys
from shared.serving import serve
from shared.settings import CommonSettings
serve("pid_app:app", CommonSettings(), host="127.0.0.1", port=int(sys.argv[1]), workers=2, log_level="warning")
'''


def start(directory: Path, port: int) -> subprocess.Popen:
    (directory / "pid_app.py").write_text(APP)
    env = {**os.environ, "PYTHONPATH": f"{directory}{os.pathsep}{ROOT}"}
    return subprocess.Popen([sys.executable, "-c", SERVE, str(port)], env=env, cwd=directory,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def pid_of(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status == 200
    return int(response.read())


def open_together(port: int, count: int) -> list[http.client.HTTPConnection]:
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(count)]
    for connection in connections:
        connection.connect()
    return connections


def wait_for_workers(port: int, process: subprocess.Popen, timeout: float = 30.0) -> set[int]:
    """Until two different worker pids have answered (both workers are up)."""
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while time.monotonic() < deadline and len(seen) < 2:
        assert process.poll() is None, process.stdout.read().decode(errors="replace")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            seen.add(pid_of(connection))
            connection.close()
        except OSError:
            time.sleep(0.1)
    assert len(seen) == 2, f"only {seen} answered"
    return seen


@pytest.fixture
def two_workers(tmp_path):
    port = free_port()
    process = start(tmp_path, port)
    try:
        wait_for_workers(port, process)
        yield port, process
    finally:
        stop_group(process)


def test_connections_opened_together_spread_over_both_workers(two_workers):
    port, _ = two_workers
    for _ in range(3):
        connections = open_together(port, 32)
        per_worker = Counter(pid_of(connection) for connection in connections)
        for connection in connections:  # a second request on each stays with the connection's worker
            assert pid_of(connection) in per_worker
            connection.close()
        assert len(per_worker) == 2, per_worker
        # the kernel spreads by address hash: 32 connections split binomially, not 32/0 (below 4 is a 1e-6 event)
        assert min(per_worker.values()) >= 4, per_worker


def test_a_dead_workers_connections_go_to_the_others(two_workers):
    port, _ = two_workers
    victim = pid_of(http.client.HTTPConnection("127.0.0.1", port, timeout=5))
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.2)
    for _ in range(3):
        connections = open_together(port, 32)
        pids = {pid_of(connection) for connection in connections}  # every connection is answered
        for connection in connections:
            connection.close()
        assert victim not in pids


def test_a_second_server_on_the_same_port_does_not_start(two_workers, tmp_path):
    port, _ = two_workers
    second = start(tmp_path, port)
    try:
        assert second.wait(20) != 0
        assert b"in use" in second.stdout.read()
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    assert pid_of(connection)  # the first still answers

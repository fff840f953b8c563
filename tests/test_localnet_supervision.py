"""The demo (``python -m localnet``, as ``scripts/demo.sh`` runs it) survives its parts and leaves nothing behind.

A real launcher process with two miners, the validator and an API process of
two workers; its process tree is read from /proc. Every process runs with a
1 s header timeout (``HTTP_HEADER_TIMEOUT``, inherited through the launcher).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from process_tree import process_tree

from localnet.launcher import free_port

ROOT = Path(__file__).resolve().parent.parent


class Demo:
    def __init__(self, directory: Path):
        self.api_port = free_port()
        miner_base = free_port()
        self.validator_port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "localnet", "--dir", str(directory), "--api-port", str(self.api_port),
             "--validator-port", str(self.validator_port), "--web-port", str(free_port()),
             "--miner-base-port", str(miner_base), "--miners", "good,noisy", "--api-workers", "2"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "HTTP_HEADER_TIMEOUT": "1"}, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                found = re.search(pattern, line)
                if found:
                    return found
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in the demo's output:\n" + "\n".join(self.lines[-40:]))

    def chat(self, key: str) -> str:
        body = json.dumps({"messages": [{"role": "user", "content": "What is Bittensor?"}], "stream": False}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}/v1/chat/completions", data=body,
                                         headers={"Authorization": f"Bearer {key}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["choices"][0]["message"]["content"]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent to read its exit status is not)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[tuple[Demo, str]]:
    demo = Demo(tmp_path_factory.mktemp("demo"))
    try:
        key = demo.wait_for(r"Demo API key: (\S+)", 90).group(1)
        yield demo, key
    finally:
        if demo.process.poll() is None:
            for pid in process_tree(demo.process.pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            demo.process.kill()
            demo.process.wait()


def test_a_killed_miner_leaves_the_demo_running_and_serving(demo):
    demo, key = demo
    miners = {pid: cmd for pid, cmd in process_tree(demo.process.pid).items() if "-m miner" in cmd}
    assert len(miners) == 2, process_tree(demo.process.pid)
    victim = min(miners)
    os.kill(victim, signal.SIGKILL)
    demo.wait_for(r"miner-\d-\w+ exited \(killed by SIGKILL.*not restarted: the subnet goes on with 1 miner", 10)
    time.sleep(1.0)
    assert demo.process.poll() is None
    answers = [demo.chat(key) for _ in range(10)]
    assert all(answer.strip() for answer in answers)
    assert demo.process.poll() is None and not any(alive(pid) for pid in [victim])


def test_idle_and_slow_header_connections_are_closed_by_every_process(demo):
    demo, _ = demo
    miner_ports = [int(demo.wait_for(rf"uid {uid}: \w+ +127\.0\.0\.1:(\d+)", 1).group(1)) for uid in (1, 2)]
    miner_port = next(port for port in miner_ports if listening(port))  # one miner may have been killed
    connections = []
    for port in (demo.api_port, demo.validator_port, miner_port):
        idle = socket.create_connection(("127.0.0.1", port))
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
        connections += [idle, slow]
    started = time.monotonic()
    for sock in connections:
        sock.settimeout(5)
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
        sock.close()
    assert time.monotonic() - started < 4


def test_two_ctrl_c_leave_no_process_behind(demo):
    demo, _ = demo
    processes = process_tree(demo.process.pid)
    assert sum("-m api" in cmd for cmd in processes.values()) == 1 and len(processes) >= 5, processes
    demo.process.send_signal(signal.SIGINT)
    time.sleep(0.3)  # the launcher is stopping now: the second Ctrl-C lands in the middle
    demo.process.send_signal(signal.SIGINT)
    demo.process.wait(30)
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {pid: cmd for pid, cmd in processes.items() if alive(pid)}
    assert left == {}, left
    assert demo.process.returncode == 0 and "stopped." in demo.lines


def test_free_port_never_hands_out_the_same_port_twice():
    """A subnet draws its ports before any process binds them: two draws must not collide (seen in CI)."""
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)

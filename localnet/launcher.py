"""Start and stop the processes of a local subnet.

    net = LocalSubnet(Path(".localnet"), api_port=8000)
    net.start()              # pages, wallets, subnet file, miners, validator, API workers; waits until ready
    key = net.create_api_key()
    net.exited()             # [(name, exit code)] of processes that ended since the last call
    net.stop()               # SIGTERM to everything at once, SIGKILL after a grace period
    net.kill_all()           # SIGKILL to everything now (a second Ctrl-C while stopping)

Each process is the real entry point (``python -m miner|validator|api``) with
its settings passed as environment variables, logging to ``<dir>/logs``. Each
runs in its own process group (an API process's workers share its group), and
every signal goes to the whole group, so no worker outlives its parent; each
child also gets SIGTERM from the kernel if the launcher itself dies
(``PR_SET_PDEATHSIG``), so even a killed launcher leaves nothing behind. The
corpus is served as web pages from a thread of the launcher's own process
(``localnet.web_pages``), at ``net.web_url``; miners answer web retrieval with
those URLs, and the API and the validator may fetch 127.0.0.1 for them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from .topology import Member, create_members, write_subnet
from .web_pages import PageServer

DEFAULT_BEHAVIOURS = ["good", "noisy", "slow", "broken", "copycat"]
MINER_TASKS = "InferenceTask,WebQuestionAnsweringTask,WebRetrievalTask"
DIRECTORY_REFRESH_SECONDS = 1.0  # how often each API worker of the local subnet fetches the miner directory
# The demo's validator: quick rounds and a weight step every 20 s, so scores visibly separate.
DEMO_VALIDATOR_SETTINGS = {"synthetic_interval_seconds": 1.0, "weights_interval_seconds": 20.0}
PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True), "prctl", None)


def _die_with_parent() -> None:
    """In the child between fork and exec: SIGTERM when the launcher dies (Linux; a no-op elsewhere).

    The kernel watches the *thread* that forked: spawn from one that lives as long as the subnet
    (the main thread, as ``start`` does), not from a short-lived worker thread.
    """
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a process group; False if no process of it is left."""
    try:
        os.killpg(pgid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the process group ``process`` leads, SIGKILL after ``grace`` s; the leader is reaped."""
    if process.poll() is not None:
        return
    signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        signal_group(process.pid, signal.SIGKILL)
        process.wait()


def ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports this process has handed out: a port drawn for a server that has not bound it yet is still free
# to a second draw, and a subnet draws ten or so at once (two drew the same one in a CI run).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port for a process that will bind it a moment later.

    Drawn at random below the kernel's ephemeral range, where outgoing connections take their local
    ports: a port from that range (what binding port 0 gives) can be taken by any new connection
    between this check and the server's bind, which made a starting API worker fail now and then.
    Never the same port twice in one process.
    """
    top = ephemeral_ports_start()
    for _ in range(100):
        port = max(1024, top - 12000) + secrets.randbelow(min(12000, top - 1024))
        if port in _HANDED_OUT:
            continue
        _HANDED_OUT.add(port)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, headers: Optional[dict] = None, method: str = "GET", timeout: float = 3.0) -> dict:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class LocalSubnet:
    def __init__(
        self,
        directory: Path,
        *,
        api_port: int = 8000,
        validator_port: int = 8092,
        miner_ports: Optional[list[int]] = None,
        behaviours: Optional[list[str]] = None,
        api_workers: int = 2,
        admin_key: Optional[str] = None,
        extra_env: Optional[dict[str, str]] = None,
        validator_settings: Optional[dict[str, object]] = None,
        api_ports: Optional[list[int]] = None,
        miner_settings: Optional[list[dict[str, object]]] = None,
        web_port: int = 8093,
        miner_modules: Optional[list[str]] = None,
        launchers: Optional[dict[str, list[str]]] = None,
        code_root: Optional[Path] = None,
    ):
        self.directory = directory.resolve()
        self.behaviours = behaviours or list(DEFAULT_BEHAVIOURS)
        self.api_ports = list(api_ports) if api_ports else [api_port]
        self.api_port = self.api_ports[0]
        self.validator_port = validator_port
        self.miner_ports = miner_ports or [8101 + i for i in range(len(self.behaviours))]
        self.api_workers = api_workers
        self.admin_key = admin_key or self._stored_admin_key()
        self.extra_env = extra_env or {}
        self.validator_settings = {**DEMO_VALIDATOR_SETTINGS, **(validator_settings or {})}
        # Per miner, in the order of ``behaviours``: settings over the defaults (e.g. MINER_MODELS).
        self.miner_settings = miner_settings or [{} for _ in self.behaviours]
        # Per miner: the module run as ``python -m`` (the tests run dishonest miners built from the reference one).
        self.miner_modules = miner_modules or ["miner" for _ in self.behaviours]
        # Per module: a command that runs its ``python -m`` (``bench/instructions.py`` runs some under valgrind).
        self.launchers = launchers or {}
        # The checkout whose ``api``, ``validator`` and ``miner`` run (``python -m`` finds them in its directory):
        # this one, or another for a side-by-side of two versions (``bench/instructions.py --compare``).
        self.code_root = code_root or Path(__file__).resolve().parent.parent
        self.pages = PageServer(web_port)
        self.processes: dict[str, subprocess.Popen] = {}
        self.groups: dict[int, subprocess.Popen] = {}  # every group we started, by pgid, until it is gone
        self._reported: set[int] = set()
        self.members: list[Member] = []

    # -- layout ---------------------------------------------------------------------------------
    @property
    def wallet_path(self) -> Path:
        return self.directory / "wallets"

    @property
    def subnet_file(self) -> Path:
        return self.directory / "subnet.json"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    @property
    def api_names(self) -> list[str]:
        return ["api"] if len(self.api_ports) == 1 else [f"api-{port}" for port in self.api_ports]

    @property
    def web_url(self) -> str:
        return self.pages.base_url

    @property
    def validator_url(self) -> str:
        return f"http://127.0.0.1:{self.validator_port}"

    def member(self, role: str, behaviour: Optional[str] = None) -> Member:
        return next(m for m in self.members if m.role == role and (behaviour is None or m.behaviour == behaviour))

    def _stored_admin_key(self) -> str:
        path = self.directory / "admin-key"
        if path.exists():
            return path.read_text().strip()
        self.directory.mkdir(parents=True, exist_ok=True)
        key = "admin-" + secrets.token_urlsafe(24)
        path.write_text(key)
        path.chmod(0o600)
        return key

    # -- processes ------------------------------------------------------------------------------
    def _env(self, member: Member, **settings: object) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_ENV_FILE") and k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(
            WALLET_NAME=member.name, WALLET_HOTKEY="default", WALLET_PATH=str(self.wallet_path),
            CHAIN="local", SUBNET_FILE=str(self.subnet_file), DATA_DIR=str(self.directory / "data" / member.name),
            API_ENV_FILE="/nonexistent", VALIDATOR_ENV_FILE="/nonexistent", MINER_ENV_FILE="/nonexistent",
            PYTHONUNBUFFERED="1",
        )
        env.update({key.upper(): str(value) for key, value in settings.items()})
        env.update(self.extra_env)
        return env

    def spawn(self, name: str, module: str, env: dict[str, str]) -> subprocess.Popen:
        logs = self.directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = open(logs / f"{name}.log", "ab")
        command = [*self.launchers.get(module, []), sys.executable, "-m", module]
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.code_root,
                                   start_new_session=True,
                                   preexec_fn=_die_with_parent)
        log.close()
        self.processes[name] = process
        self.groups[process.pid] = process
        return process

    def start_miner(self, member: Member) -> subprocess.Popen:
        settings: dict[str, object] = dict(miner_port=member.port, miner_behaviour=member.behaviour,
                                           metagraph_refresh_seconds=2, miner_tasks=MINER_TASKS,
                                           miner_web_base_url=self.web_url)
        if member.behaviour == "copycat":
            settings["miner_copy_hotkey"] = next(m.hotkey for m in self.members if m.role == "miner")
        settings.update(self.miner_settings[member.uid - 1])
        return self.spawn(f"miner-{member.uid}-{member.behaviour}", self.miner_modules[member.uid - 1],
                          self._env(member, **settings))

    def start_validator(self) -> subprocess.Popen:
        # Web retrieval results count only from the local page server: a page a miner hosts itself does not.
        settings = {"web_allowed_hosts": f"127.0.0.1:{self.pages.port}", **self.validator_settings}
        return self.spawn("validator", "validator", self._env(
            self.member("validator"), validator_port=self.validator_port, metagraph_sync_seconds=2,
            availability_poll_seconds=3, web_fetch_allow_private=True, **settings))

    def start_api(self) -> list[subprocess.Popen]:
        validator = self.member("validator")
        processes = []
        for name, port in zip(self.api_names, self.api_ports):
            env = self._env(validator, api_port=port, api_workers=self.api_workers,
                            validator_url=self.validator_url, admin_key=self.admin_key,
                            directory_refresh_seconds=DIRECTORY_REFRESH_SECONDS,
                            web_fetch_allow_private=True)
            env["DATA_DIR"] = str(self.directory / "data" / "api")
            env.update(self.extra_env)
            processes.append(self.spawn(name, "api", env))
        return processes

    def start(self, timeout: float = 60.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pages.start()
        self.members = create_members(self.wallet_path, self.behaviours, self.validator_port, self.miner_ports)
        write_subnet(self.subnet_file, self.members)
        for member in self.members:
            if member.role == "miner":
                self.start_miner(member)
        self.start_validator()
        self.start_api()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Until the API routes to every miner: the validator answered and found them all available.

        Several workers share a port and ``/health`` is answered by one of them; the others fetch the same
        directory within their refresh interval. So the condition must hold for longer than one refresh
        (``DIRECTORY_REFRESH_SECONDS``, below) before every worker is known to route to every miner."""
        expected = sum(1 for m in self.members if m.role == "miner")
        deadline = time.monotonic() + timeout
        ready_since: Optional[float] = None
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None and (name == "validator" or name in self.api_names):
                    raise RuntimeError(f"{name} exited with {process.returncode}; see {self.directory}/logs/{name}.log")
            if all(self._api_ready(url, expected) for url in self.api_urls):
                ready_since = ready_since or time.monotonic()
                if self.api_workers == 1 or time.monotonic() - ready_since > DIRECTORY_REFRESH_SECONDS + 0.5:
                    return
            else:
                ready_since = None
            time.sleep(0.2)
        raise TimeoutError(f"local subnet not ready after {timeout:.0f}s; logs in {self.directory}/logs")

    @staticmethod
    def _api_ready(url: str, expected: int) -> bool:
        try:
            health = get_json(url + "/health")
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return health.get("available_miners", 0) >= expected and bool(health.get("validator_reachable"))

    def exited(self) -> list[tuple[str, int]]:
        """(name, exit code) of each process that has ended since the last call (negative: killed by a signal).

        What was left of its group (a worker of an API process) is killed.
        """
        ended = []
        for name, process in list(self.processes.items()):
            if process.pid not in self._reported and process.poll() is not None:
                self._reported.add(process.pid)
                signal_group(process.pid, signal.SIGKILL)
                ended.append((name, process.returncode))
        return ended

    def log_path(self, name: str) -> Path:
        return self.directory / "logs" / f"{name}.log"

    def stop_process(self, name: str, grace: float = 5.0) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        if process.poll() is None:
            signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self._end_group(process.pid)

    def _end_group(self, pgid: int) -> None:
        """SIGKILL to what is left of a group, then reap its leader; the group is forgotten."""
        process = self.groups.pop(pgid, None)
        signal_group(pgid, signal.SIGKILL)
        if process is not None:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def _live_groups(self) -> list[int]:
        for process in self.groups.values():
            process.poll()  # reap a leader that exited (a zombie still counts as a member of its group)
        return [pgid for pgid in self.groups if signal_group(pgid, 0)]

    def kill_all(self) -> None:
        """SIGKILL to every process group we started, now (what a second Ctrl-C asks for)."""
        for pgid in list(self.groups):
            signal_group(pgid, signal.SIGKILL)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to every process group at once; SIGKILL to any still there after ``grace`` s.

        Returns when no process we started is left (a second signal meanwhile may call :meth:`kill_all`).
        """
        for pgid in self._live_groups():
            signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self._live_groups() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pgid in list(self.groups):
            self._end_group(pgid)
        deadline = time.monotonic() + 5.0
        while self._live_groups() and time.monotonic() < deadline:  # only unreapable zombies could stay
            time.sleep(0.05)
        self.groups.clear()
        self.processes.clear()
        self.pages.stop()

    # -- admin ----------------------------------------------------------------------------------
    def create_api_key(self, name: str = "demo") -> str:
        answer = get_json(f"{self.api_url}/api_management/create-api-key/?name={name}",
                          headers={"admin-key": self.admin_key}, method="POST")
        return answer["api_key"]

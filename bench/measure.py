"""Run ``bench/load.py`` in its own process and charge each server its CPU time per request.

    result = run_load(["--url", url, "--concurrency", "32"], {"api": family(api_pid), "miner": [miner_pid]})
    result["rps"], result["cpu_us"]["api"], result["cpu_us"]["load"]

On a small shared machine throughput moves with whatever else runs, but the
CPU a process spends per request is stable, and the processes of one set-up
share the same cores: their per-request CPU times add up, and the machine's
cores divided by that sum bound the requests per second. Each server's
utime+stime (``/proc/PID/stat``) is read when the load generator says it
starts and again when it prints its result, so start-up is not charged; the
load generator reports its own CPU over the same window.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

LOAD = Path(__file__).resolve().parent / "load.py"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process; 0 for a process that is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def busy_cores() -> float:
    """Cores' worth of time the whole machine has spent busy since boot (``/proc/stat``'s first line)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return (sum(fields[:8]) - idle) / TICKS


def wait_until_quiet(max_busy: float = 0.1, window: float = 0.25, timeout: float = 15.0) -> float:
    """Wait until the machine is quiet: under ``max_busy`` of one core busy over ``window`` seconds; the
    seconds waited (``timeout`` at most).

    A server under a load that just ended may go on working for a while (LiteLLM at c=32 still had queued
    requests to finish after its client left): the next target's run must not start on cores it is using.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = busy_cores()
        time.sleep(window)
        if busy_cores() - before < max_busy * window:
            break
    return time.monotonic() - started


def family(pid: int) -> list[int]:
    """A process and its direct children (uvicorn's workers when it runs more than one)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *(int(child) for child in children)]


def machine_line() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    cores = len(os.sched_getaffinity(0))  # what nproc prints
    return f"machine: {cores} cores ({model}), load average {load}; Python {platform.python_version()}"


LOAD_GENERATOR = ("load generator: bench/load.py in its own process (asyncio protocols + httptools, uvloop, "
                  "one keep-alive connection per client)")


def run_load(arguments: list[str], servers: dict[str, list[int]],
             probe: Optional[Callable[[int], Any]] = None) -> dict:
    """One load run: load.py's JSON plus ``cpu_us`` (µs of CPU per good request, per server and ``load``).

    ``probe(load_pid)``, when given, is read at the same two moments as the CPU times; its two readings are
    ``result["probe"]`` (before, after)."""
    process = subprocess.Popen([sys.executable, str(LOAD), *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    notice = process.stderr.readline()  # "load: …" just before the first request
    probed = probe(process.pid) if probe else None
    before = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in servers.items()}
    output = process.stdout.readline()
    after = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in servers.items()}
    if probe:
        probed = (probed, probe(process.pid))
    _, errors = process.communicate()
    if process.returncode != 0 or not output.strip():
        raise RuntimeError(f"load.py failed ({process.returncode}): {(notice + errors).strip()[-2000:]}")
    result = json.loads(output)
    requests = max(1, result["requests"])
    result["cpu_us"] = {name: (after[name] - before[name]) * 1e6 / requests for name in servers}
    result["cpu_us"]["load"] = result["cpu_us_per_request"]
    if probe:
        result["probe"] = probed
    return result

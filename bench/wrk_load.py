"""Load from ``wrk`` instead of ``bench/load.py``, with the same result shape as ``bench.measure.run_load``.

    result = run_wrk(url, body, concurrency=32, seconds=5, servers={"api": [pid]}, key="sk-…")
    result["rps"], result["p50_ms"], result["p99_ms"], result["errors"], result["cpu_us"]["api"]

``wrk`` (C, one thread here) is what outside comparisons use; ``bench/bench_peer.py --load wrk`` runs its
side-by-side with it, so that a figure from an independent wrk run and one from ours can be set side by
side. The request is a POST with a fixed JSON body (a Lua script sets method, headers and body from the
environment). Latency percentiles come from wrk's ``--latency`` table; errors are its non-2xx answers
plus its socket errors; the load generator's own CPU is wrk's rusage as a finished child process.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from bench.measure import cpu_seconds

SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("WRK_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
wrk.body = os.getenv("WRK_BODY")
"""
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def available() -> bool:
    return shutil.which("wrk") is not None


def percentile_ms(output: str, percent: int) -> float:
    found = re.search(rf"^\s+{percent}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    return float(found.group(1)) * UNITS_MS[found.group(2)] if found else float("nan")


def parse(output: str) -> dict:
    """wrk's text report → requests, errors, rps, p50_ms, p99_ms (``ValueError`` when it is not one)."""
    requests = re.search(r"(\d+) requests in", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if requests is None or rps is None:
        raise ValueError(f"not a wrk report: {output[-500:]}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return {"requests": int(requests.group(1)), "errors": errors, "rps": float(rps.group(1)),
            "p50_ms": percentile_ms(output, 50), "p99_ms": percentile_ms(output, 99)}


def run_wrk(url: str, body: str, *, concurrency: int, seconds: float, servers: dict[str, list[int]],
            key: Optional[str] = None) -> dict:
    """One wrk run against ``url`` (the full address of the endpoint) and each server's CPU µs per request."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(SCRIPT)
        env = {**os.environ, "WRK_BODY": body, "WRK_KEY": key or ""}
        before = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in servers.items()}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        finished = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency",
                                   "-s", str(script), url], env=env, capture_output=True, text=True)
        after = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in servers.items()}
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
    if finished.returncode != 0:
        raise RuntimeError(f"wrk failed ({finished.returncode}): {finished.stderr.strip()[-1000:]}")
    result = parse(finished.stdout)
    good = max(1, result["requests"] - result["errors"])
    result["cpu_us"] = {name: (after[name] - before[name]) * 1e6 / good for name in servers}
    result["cpu_us"]["load"] = ((used.ru_utime - children.ru_utime) + (used.ru_stime - children.ru_stime)) * 1e6 / good
    return result

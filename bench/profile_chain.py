"""Where the chain's CPU goes: py-spy on the API worker, the reference miner and the validator under load.

    .venv/bin/python bench/profile_chain.py [--seconds 10] [--concurrency 32] [--stream] [--top 40]

Starts what ``bench/bench_peer.py`` starts for "ours" (the fake upstream, one
reference miner with ``MINER_BACKEND=upstream``, the validator, ONE API
worker), drives load at it from ``bench/load.py``, and meanwhile records both
servers with ``py-spy record --format raw`` (py-spy must be on PATH or in the
venv: ``pip install py-spy``). Prints, per process, the requests/s, the CPU µs
per request (from /proc) and the functions that take the most of it, *inclusive*
(a function and what it calls) and *self* (its own lines), in µs per request:
a sample's share of the process's samples times its CPU per request.
The raw profiles stay in ``--out`` (flamegraph-ready collapsed stacks).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_peer import upstream_and_ours  # noqa: E402
from bench.measure import family, run_load  # noqa: E402


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


def frame_name(frame: str) -> str:
    """``handle (shared/serving.py:123)`` → ``handle (shared/serving.py)``: lines folded into their function."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path.replace(str(ROOT) + '/', '')})"


def summarise(raw: Path, us_per_request: float, top: int) -> list[str]:
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += samples
        for name in set(frames):
            inclusive[name] += samples
        own[frames[-1]] += samples
    if not total:
        return ["  (no samples)"]
    scale = us_per_request / total
    lines = [f"  {total} samples; µs per request: inclusive | self"]
    for name, samples in inclusive.most_common(top):
        lines.append(f"  {samples * scale:8.1f} | {own[name] * scale:7.1f}  {name}")
    lines.append("  top self:")
    for name, samples in own.most_common(top // 2):
        lines.append(f"  {samples * scale:8.1f}  {name}")
    return lines


def syscalls_per_request(path: Path, rps: float, seconds: float) -> str:
    """strace -c's table, its call counts divided by the requests of the traced window (about rps × seconds)."""
    requests = max(1.0, rps * (seconds - 0.5))
    lines = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[3].isdigit():
            lines.append(f"  {int(fields[3]) / requests:6.2f} per request  {fields[-1]}")
    return "\n".join(lines[:15])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--syscalls", action="store_true", help="count system calls per request (strace -c) instead")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "profile_chain")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp, upstream_and_ours(Path(tmp)) as (net, _):
        key = net.create_api_key("bench")
        miner = net.member("miner")
        miner_process = next(p for name, p in net.processes.items() if name.startswith("miner"))
        api_pids = family(net.processes["api"].pid)
        processes = {"api": api_pids[-1], "miner": miner_process.pid, "validator": net.processes["validator"].pid}
        target = ["--url", net.api_url, "--key", key, "--uid", str(miner.uid),
                  "--concurrency", str(args.concurrency)] + (["--stream"] if args.stream else [])
        run_load([*target, "--seconds", "2"], {})  # warm-up
        def recorder(name: str, pid: int) -> list[str]:
            if args.syscalls:
                return ["timeout", "-s", "INT", str(int(args.seconds)), "strace", "-c", "-f", "-p", str(pid),
                        "-o", str(args.out / f"{name}.strace")]
            return [py_spy(), "record", "--format", "raw", "--rate", str(args.rate),
                                    "--duration", str(int(args.seconds) + 1), "--pid", str(pid),
                    "--output", str(args.out / f"{name}.txt"), "--nonblocking"]

        recorders = {name: subprocess.Popen(recorder(name, pid), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                     for name, pid in processes.items()}
        time.sleep(0.5)
        result = run_load([*target, "--seconds", str(args.seconds)],
                          {"api": api_pids, "miner": [miner_process.pid], "validator": [processes["validator"]]})
        for running in recorders.values():
            running.wait()
        kind = "stream 20 chunks" if args.stream else "non-stream"
        print(f"{kind}, c={args.concurrency}: {result['rps']:.0f} rps, p50 {result['p50_ms']:.2f} ms, "
              f"p99 {result['p99_ms']:.2f} ms; profiles in {args.out}")
        for name in processes:
            print(f"\n== {name}: {result['cpu_us'][name]:.0f} µs CPU per request")
            if args.syscalls:
                print(syscalls_per_request(args.out / f"{name}.strace", result["rps"], args.seconds))
                continue
            print("\n".join(summarise(args.out / f"{name}.txt", result["cpu_us"][name], args.top)))


if __name__ == "__main__":
    main()

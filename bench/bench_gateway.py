"""The gateway against the direct path, in one run: latency and throughput, stream and not.

    .venv/bin/python bench/bench_gateway.py [--seconds 5] [--memory-requests 0] [--skip-extras] [--workers 1]

Starts a local subnet (one fast reference miner, builtin backend, 20-token
answers; the validator; ONE API worker), then drives load from a separate
process (bench/load.py) at concurrency 1 and 32, non-stream and stream
(20 content chunks), through the API (``uids`` pins the one miner) and
directly against that miner with signed requests. Prints p50/p99 and
requests/s for both, the ratios, and the median latency the gateway adds;
and, per request, the CPU time of each process (API worker, miner,
validator, load generator) over the same window, read from /proc. On a
shared 2-core machine that is the stable figure: the processes share the
cores, so the sum of their CPU per request bounds the throughput. With
``--memory-requests N`` it also sends N more requests and reports the API
worker's resident memory before and after (with ``--workers 2``: the sum
over the workers, and each at the end). Then, unless ``--skip-extras``,
the same command runs ``bench_mixture.py`` (mixture latency against its
slowest miner) and ``bench_scoring.py`` (scoring throughput, weight step),
each on its own subnet or database, so one run reports every figure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import LOAD_GENERATOR, family, machine_line, run_load  # noqa: E402
from localnet.launcher import LocalSubnet, free_port  # noqa: E402

SERVERS = ("api", "miner", "validator")


def load(net: LocalSubnet, *, direct: bool, concurrency: int, stream: bool, seconds: float, key: str) -> dict:
    miner = net.member("miner")
    arguments = ["--concurrency", str(concurrency), "--seconds", str(seconds), "--tokens", "20"]
    if stream:
        arguments.append("--stream")
    if direct:
        arguments += ["--url", f"http://{miner.axon}", "--direct", "--receiver", miner.hotkey,
                      "--wallet-path", str(net.wallet_path)]
    else:
        arguments += ["--url", net.api_url, "--key", key, "--uid", str(miner.uid)]
    miner_process = next(p for name, p in net.processes.items() if name.startswith("miner"))
    servers = {"api": family(net.processes["api"].pid), "miner": family(miner_process.pid),
               "validator": [net.processes["validator"].pid]}
    return run_load(arguments, servers)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def api_worker_pids(net: LocalSubnet) -> list[int]:
    """uvicorn's worker processes (multiprocessing "spawn" children, not its resource tracker), or the one process."""
    parent = net.processes["api"].pid
    children = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()] or [parent]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--memory-requests", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="API_WORKERS (the figures above are for 1)")
    parser.add_argument("--skip-extras", action="store_true", help="skip the mixture and scoring benchmarks")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        net = LocalSubnet(Path(tmp), api_port=free_port(), validator_port=free_port(), miner_ports=[free_port()],
                          behaviours=["good"], api_workers=args.workers, web_port=free_port(),
                          validator_settings={"synthetic_interval_seconds": 3600},
                          extra_env={"LOG_LEVEL": "WARNING"})
        net.start()
        try:
            key = net.create_api_key("bench")
            print(machine_line())
            print(LOAD_GENERATOR)
            workers = "one API worker" if args.workers == 1 else f"{args.workers} API workers"
            print(f"{workers}, one miner (builtin backend), the validator; {args.seconds:g} s per run; "
                  "columns api…sum: CPU µs per request of each process over the run, and their sum")
            print(f"{'case':<28}{'path':<8}{'rps':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
                  + "".join(f"{name:>10}" for name in (*SERVERS, "load", "sum")))
            for stream in (False, True):
                for concurrency in (1, 32):
                    case = f"{'stream 20 chunks' if stream else 'non-stream'}, c={concurrency}"
                    direct = load(net, direct=True, concurrency=concurrency, stream=stream, seconds=args.seconds,
                                  key=key)
                    gateway = load(net, direct=False, concurrency=concurrency, stream=stream,
                                   seconds=args.seconds, key=key)
                    for name, result in (("direct", direct), ("api", gateway)):
                        cpu = [result["cpu_us"][server] for server in (*SERVERS, "load")]
                        print(f"{case:<28}{name:<8}{result['rps']:>9.0f}{result['p50_ms']:>9.2f}"
                              f"{result['p99_ms']:>9.2f}{result['errors']:>8}"
                              + "".join(f"{value:>10.0f}" for value in (*cpu, sum(cpu))))
                    print(f"{'':<28}{'ratio':<8}{gateway['rps'] / direct['rps']:>9.2f}"
                          f"{gateway['p50_ms'] / direct['p50_ms']:>9.2f}{gateway['p99_ms'] / direct['p99_ms']:>9.2f}"
                          f"   added p50 {gateway['p50_ms'] - direct['p50_ms']:.2f} ms")
            if args.memory_requests:
                pids = api_worker_pids(net)
                before = sum(rss_kib(p) for p in pids)
                sent = 0
                started = time.monotonic()
                series = []  # (requests sent so far, RSS MiB): warm-up levels off, a leak keeps climbing
                while sent < args.memory_requests:
                    result = load(net, direct=False, concurrency=32, stream=False, seconds=10, key=key)
                    sent += result["requests"]
                    series.append(f"{sent // 1000}k {sum(rss_kib(p) for p in pids) / 1024:.1f}")
                after = sum(rss_kib(p) for p in pids)
                print(f"memory: API worker RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after "
                      f"{sent:,} more requests ({time.monotonic() - started:.0f} s)")
                print(f"memory along the way (requests, MiB): {', '.join(series)}")
                if len(pids) > 1:
                    print("memory per worker after (MiB): " + ", ".join(f"{rss_kib(p) / 1024:.1f}" for p in pids))
        finally:
            net.stop()
    if not args.skip_extras:
        for script, arguments in (("bench_mixture.py", ["--rounds", "3"]), ("bench_scoring.py", [])):
            print(f"\n== {script} {' '.join(arguments)}", flush=True)
            subprocess.run([sys.executable, str(ROOT / "bench" / script), *arguments], check=True)


if __name__ == "__main__":
    main()

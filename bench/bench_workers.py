"""One API worker against two (``API_WORKERS=2``) on a machine with only 2 cores, measured honestly.

    .venv/bin/python bench/bench_workers.py [--seconds 5] [--rounds 2] [--modes capped,pinned,free,paced]
    .venv/bin/python bench/bench_workers.py --modes capped --cap 0.35   # each API worker gets 0.35 of a core

Two local subnets run side by side (each: one reference miner, builtin backend,
20-token answers; the validator; the API with 1 or with 2 workers), and the
load generator (``bench/load.py``, own process, c=32 whole answers) drives one
of them at a time, the two interleaved run by run. On 2 cores "2 workers
serve 1.6× one worker's throughput where the cores exist" cannot be shown by
giving each worker a core: the miner, the validator and the load generator
need about as much CPU per request as the API worker. So the script measures
what scales, each in its own mode:

- ``capped`` (the scaling figure): each API worker alone in a CPU cgroup (v1
  ``cpu.cfs_quota_us``, 10 ms period) allowed ``--cap`` of one core; the rest
  runs free on both cores. All of the set-up's processes get 8× the default
  CPU weight meanwhile (``cpu.shares``), so that other work on a shared
  machine does not starve them. One worker then has ``cap`` cores, two have
  ``2 × cap``, each the same slice a worker would have of its own core, and the
  rest has the remaining ``2 − n × cap`` cores. The line reports how much of
  its quota each worker used (≥ 90%: the API workers were the bottleneck and
  the ratio of throughputs is their scaling; below: something else limited
  it, and the ratio says nothing). Needs root and the cgroup v1 ``cpu``
  hierarchy; skipped otherwise.
- ``pinned``: ``taskset`` puts one worker on CPU 0, or the two workers on CPU 0
  and CPU 1; the miner, validator and load generator float, and their CPU per
  request says what share of the cores they took.
- ``free``: no placement; all processes share the 2 cores as the scheduler likes.
- ``paced``: the same offered load (``--rate`` requests/s, below what one
  worker can serve) against 1 and 2 workers. Each of two workers then serves
  half as many requests per second, and a process that serves fewer wakes up
  for fewer requests at a time, so its CPU per request rises with no
  contention at all; hence also
- ``matched``: the same load *per worker*: one worker at ``--rate / 2``, two
  at ``--rate``. Equal API CPU µs per request here means no cross-worker
  contention; more with two is a cost of having two (locks, shared files).

Every line gives requests/s, p50/p99, the CPU µs per request of each API
worker, of the miner, the validator and the load generator (utime+stime from
``/proc`` over the run), each worker's share of the API's CPU and of the open
connections (``ss``), and the machine's load average. The capacity projection
at the end is labelled as such: 2 cores divided by the API workers' CPU per
request (what the API alone could serve with both cores), and by the whole
chain's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_peer import started  # noqa: E402
from bench.measure import LOAD, LOAD_GENERATOR, cpu_seconds, machine_line  # noqa: E402
from localnet.launcher import LocalSubnet, free_port  # noqa: E402

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 10_000
SHARES = 8192
MODES = ("capped", "pinned", "free", "paced", "matched")


# -- the processes ----------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return sorted(int(child) for child in found)


def api_workers(net: LocalSubnet) -> list[int]:
    """The processes that serve requests: uvicorn's workers, or the one process when it runs a single worker."""
    parent = net.processes["api"].pid
    if net.api_workers == 1:
        return [parent]
    # uvicorn's workers are multiprocessing "spawn" children; the parent's resource tracker is one too, but not a worker
    return [pid for pid in children(parent) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def others(net: LocalSubnet) -> dict[str, list[int]]:
    miner = next(p for name, p in net.processes.items() if name.startswith("miner"))
    return {"miner": [miner.pid], "validator": [net.processes["validator"].pid]}


def connections(port: int) -> dict[int, int]:
    """Established connections on the API's port, per owning process id."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    counts: dict[int, int] = {}
    for line in out.splitlines():
        for part in line.split("pid=")[1:]:
            pid = int(part.split(",", 1)[0])
            counts[pid] = counts.get(pid, 0) + 1
    return counts


def set_affinity(pids: list[int], cpus: Optional[set[int]]) -> None:
    """Every thread of each process onto ``cpus`` (None: all of this machine's)."""
    cpus = cpus or set(range(os.cpu_count() or 1))
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass  # a thread that ended meanwhile


class Caps:
    """One CPU cgroup per API worker, each allowed ``share`` of a core, and one for the rest; undone by ``release``.

    Every group gets ``SHARES`` of CPU weight (cgroup v1 ``cpu.shares``; a process outside has 1024), so that
    other work on a shared machine does not take what the set-up needs; the quotas still bound the API workers.
    """

    def __init__(self, share: float):
        self.share = share
        self.base = CGROUP_CPU / f"bench-workers-{os.getpid()}"
        self.groups: list[Path] = []
        self.moved: list[int] = []
        self.rest: Optional[Path] = None  # the miner's, the validator's and the load generator's group

    @staticmethod
    def available() -> bool:
        return os.geteuid() == 0 and (CGROUP_CPU / "cgroup.procs").exists()

    def _group(self, name: str, quota: Optional[float]) -> Path:
        self.base.mkdir(exist_ok=True)
        group = self.base / name
        group.mkdir(exist_ok=True)
        (group / "cpu.shares").write_text(str(SHARES))
        if quota is not None:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(int(PERIOD_US * quota)))
        self.groups.append(group)
        return group

    def move(self, pid: int, group: Path) -> None:
        try:
            (group / "cgroup.procs").write_text(str(pid))  # v1: moves every thread of the process
            self.moved.append(pid)
        except OSError:
            pass  # gone

    def apply(self, workers: list[int], rest: list[int]) -> None:
        for index, pid in enumerate(workers):
            self.move(pid, self._group(f"w{index}", self.share))
        self.rest = self._group("rest", None)
        for pid in rest:
            self.move(pid, self.rest)

    def release(self) -> None:
        for pid in self.moved:
            try:
                (CGROUP_CPU / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass  # gone
        for group in self.groups:
            try:
                group.rmdir()
            except OSError:
                pass
        self.groups, self.moved, self.rest = [], [], None
        try:
            self.base.rmdir()
        except OSError:
            pass


# -- one run ------------------------------------------------------------------------------------------
def run(net: LocalSubnet, key: str, *, seconds: float, rate: float = 0.0, concurrency: int = 32,
        stream: bool = False, trace: str = "", caps: Optional[Caps] = None) -> dict:
    """Load one subnet; requests/s, latency, CPU µs per request per process, connections per worker."""
    workers = api_workers(net)
    servers = {**{f"w{i}": [pid] for i, pid in enumerate(workers)}, **others(net)}
    arguments = ["--url", net.api_url, "--key", key, "--uid", str(net.member("miner").uid),
                 "--concurrency", str(concurrency), "--seconds", str(seconds), "--tokens", "20"]
    if rate:
        arguments += ["--rate", str(rate)]
    if stream:
        arguments.append("--stream")
    if trace:
        arguments += ["--trace", trace]
    process = subprocess.Popen([sys.executable, str(LOAD), *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    if caps is not None and caps.rest is not None:
        caps.move(process.pid, caps.rest)
    process.stderr.readline()  # "load: …" just before the first request
    before = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in servers.items()}
    sampled: dict[int, int] = {}
    sampler = threading.Timer(min(1.0, seconds / 2), lambda: sampled.update(connections(net.api_port)))
    sampler.start()
    output = process.stdout.readline()
    after = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in servers.items()}
    sampler.join()
    _, errors = process.communicate()
    if process.returncode != 0 or not output.strip():
        raise RuntimeError(f"load.py failed ({process.returncode}): {errors.strip()[-2000:]}")
    result = json.loads(output)
    requests = max(1, result["requests"])
    cpu_us = {name: (after[name] - before[name]) * 1e6 / requests for name in servers}
    cpu_us["load"] = result["cpu_us_per_request"]
    result["cpu_us"] = cpu_us
    result["api_us"] = sum(cpu_us[f"w{i}"] for i in range(len(workers)))
    result["worker_cores"] = [(after[f"w{i}"] - before[f"w{i}"]) / result["elapsed_s"] for i in range(len(workers))]
    result["connections"] = [sampled.get(pid, 0) for pid in workers]
    result["load_average"] = os.getloadavg()
    return result


def describe(mode: str, workers: int, result: dict, cap: float) -> str:
    cpu = result["cpu_us"]
    shares = [cpu[f"w{i}"] / result["api_us"] if result["api_us"] else 0 for i in range(workers)]
    used = ""
    if mode == "capped":
        used = "  quota used " + "/".join(f"{cores / cap:.0%}" for cores in result["worker_cores"])
    return (f"{mode:<7}{workers:>3}{result['rps']:>8.0f}{result['p50_ms']:>8.2f}{result['p99_ms']:>8.2f}"
            f"{result['errors']:>5}{result['api_us']:>7.0f}{cpu['miner']:>7.0f}{cpu['validator']:>7.0f}"
            f"{cpu['load']:>6.0f}{result['api_us'] + cpu['miner'] + cpu['validator'] + cpu['load']:>7.0f}"
            f"  cpu {'/'.join(f'{s:.0%}' for s in shares):<8} conns {'/'.join(map(str, result['connections'])):<7}"
            f" load {' '.join(f'{v:.1f}' for v in result['load_average'])}{used}")


def offered(mode: str, workers: int, rate: float) -> float:
    """The requests/s a run offers (0: as many as the closed loop of 32 clients gets answered)."""
    return rate if mode == "paced" else rate * workers / 2 if mode == "matched" else 0.0


def api_list(results: list[dict]) -> str:
    return "/".join(f"{result['api_us']:.0f}" for result in results)


def place(mode: str, net: LocalSubnet, caps: Optional[Caps]) -> None:
    workers = api_workers(net)
    if mode == "pinned":
        for cpu, pid in enumerate(workers):
            set_affinity([pid], {cpu})
    elif mode == "capped" and caps is not None:
        caps.apply(workers, [pid for pids in others(net).values() for pid in pids])


def unplace(mode: str, net: LocalSubnet, caps: Optional[Caps]) -> None:
    if mode == "pinned":
        set_affinity(api_workers(net), None)
    elif mode == "capped" and caps is not None:
        caps.release()


def start(directory: Path, workers: int) -> LocalSubnet:
    net = LocalSubnet(directory, api_port=free_port(), validator_port=free_port(), miner_ports=[free_port()],
                      behaviours=["good"], api_workers=workers, web_port=free_port(),
                      validator_settings={"synthetic_interval_seconds": 3600}, extra_env={"LOG_LEVEL": "WARNING"})
    return started(net)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2, help="runs per mode and worker count, interleaved")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--cap", type=float, default=0.35, help="capped: each API worker's share of one core")
    parser.add_argument("--rate", type=float, default=800.0,
                        help="paced: offered requests/s; matched: per worker half of it")
    parser.add_argument("--stream", action="store_true", help="streamed answers (20 chunks) instead of whole ones")
    args = parser.parse_args()
    modes = [mode for mode in args.modes.split(",") if mode]
    caps = Caps(args.cap) if Caps.available() else None
    if "capped" in modes and caps is None:
        print("capped: skipped (needs root and the cgroup v1 cpu hierarchy at /sys/fs/cgroup/cpu)")
        modes.remove("capped")

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        nets = {}
        for workers in (1, 2):
            nets[workers] = net = start(Path(tmp) / f"w{workers}", workers)
            stack.callback(net.stop)
        keys = {workers: net.create_api_key("bench") for workers, net in nets.items()}
        print(machine_line())
        print(LOAD_GENERATOR)
        print(f"two subnets side by side (API_WORKERS=1 and 2; each one miner, builtin backend, and the validator); "
              f"c=32 {'streams of 20 chunks' if args.stream else 'whole answers'}, {args.seconds:g} s per run, "
              f"1 and 2 workers interleaved; capped: {args.cap:g} core per worker; paced: {args.rate:g} requests/s; "
              f"matched: {args.rate / 2:g} requests/s per worker")
        print("columns api…sum: CPU µs per request (api: all its workers); cpu: each worker's share of the API's CPU; "
              "conns: open connections per worker")
        for workers, net in nets.items():  # warm-up, unreported
            run(net, keys[workers], seconds=2, stream=args.stream)
        print(f"{'mode':<7}{'wk':>3}{'rps':>8}{'p50':>8}{'p99':>8}{'err':>5}{'api':>7}{'miner':>7}{'valid':>7}"
              f"{'load':>6}{'sum':>7}")
        results: dict[tuple[str, int], list[dict]] = {}
        for mode in modes:
            for round_ in range(args.rounds):
                for workers in ((1, 2) if round_ % 2 == 0 else (2, 1)):
                    net = nets[workers]
                    place(mode, net, caps)
                    try:
                        result = run(net, keys[workers], seconds=args.seconds, stream=args.stream,
                                     rate=offered(mode, workers, args.rate),
                                     caps=caps if mode == "capped" else None)
                    finally:
                        unplace(mode, net, caps)
                    results.setdefault((mode, workers), []).append(result)
                    print(describe(mode, workers, result, args.cap), flush=True)
        print()
        for mode in modes:
            one, two = results[(mode, 1)], results[(mode, 2)]
            ratios = [b["rps"] / a["rps"] for a, b in zip(one, two)]
            costs = [b["api_us"] / a["api_us"] for a, b in zip(one, two)]
            print(f"{mode}: 2 workers / 1 worker, requests/s: {', '.join(f'{r:.2f}' for r in ratios)} "
                  f"(median {statistics.median(ratios):.2f}); API CPU µs per request 1 worker {api_list(one)}, "
                  f"2 workers {api_list(two)} (2/1: {', '.join(f'{c:.2f}' for c in costs)})")
        every = [r for rs in results.values() for r in rs if r["rps"] > 0]
        if every:
            for workers in (1, 2):
                api = statistics.median(r["api_us"] for (m, w), rs in results.items() if w == workers for r in rs)
                chain = statistics.median(sum(r["cpu_us"][n] for n in ("miner", "validator", "load")) + r["api_us"]
                                          for (m, w), rs in results.items() if w == workers for r in rs)
                cores = os.cpu_count() or 1
                print(f"projection ({workers} worker{'s' if workers > 1 else ''}; not a measurement): {cores} cores / "
                      f"API CPU {api:.0f} µs per request = {cores * 1e6 / api:,.0f} requests/s for the API alone; "
                      f"{cores} cores / whole chain {chain:.0f} µs = {cores * 1e6 / chain:,.0f} requests/s")


if __name__ == "__main__":
    main()

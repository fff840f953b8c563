"""Instructions per request of the API worker and the reference miner, counted by valgrind's callgrind.

    .venv/bin/python bench/instructions.py [--requests 100] [--windows 3] [--compare REF]

Time per request on a shared 2-core guest moves by ±15% between runs of the same code (docs/performance.md,
rounds 13 and 14), which hides any change smaller than that. The instructions a process executes for the
same requests do not move: two runs of one version agree within 1–2% (the rest is the loop's own timers),
once requests that are not the benchmark's are left out: the validator polls the miner for its availability
every 30 s, and a poll (with its signature checks) that fell into a counting window added up to 17% to the
miner's count per whole answer. So this counts in several windows and keeps the least of each process.

It starts what ``bench/bench_peer.py`` starts for "ours" (the fake upstream, one reference miner with
``MINER_BACKEND=upstream``, the validator, one API worker), with the API worker and the miner under
``valgrind --tool=callgrind --instr-atstart=no`` (start-up runs uncounted). Then, for whole answers and for
20-chunk streams: 30 requests to warm up, the counters zeroed and switched on (``callgrind_control``),
``--requests`` requests one at a time, the counts dumped and read; that ``--windows`` times. It prints
instructions per request of each process, the least over the windows. Under valgrind everything runs some
twenty times slower, so only counts are reported here, never times.

``--compare REF`` measures the checkout of a git ref first (a temporary worktree, its code run by this
checkout's launcher), then this one, and prints both and their ratio.

Needs valgrind (``apt-get install -y valgrind``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_peer import upstream_and_ours  # noqa: E402

COUNTED = ("api", "miner")
KINDS = {"whole": False, "stream (20 chunks)": True}


def callgrind(out: Path, module: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/{module}.%p"]


def send(url: str, key: str, stream: bool, count: int) -> None:
    """``count`` chat requests, one at a time on one connection; each answer read whole."""
    host, port = url.split("//", 1)[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    body = json.dumps({"model": "default", "messages": [{"role": "user", "content": "benchmark"}],
                       "stream": stream, "max_tokens": 20, "seed": 1})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        for _ in range(count):
            connection.request("POST", "/v1/chat/completions", body, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"HTTP {response.status} from the API")
    finally:
        connection.close()


def control(pid: int, *arguments: str) -> None:
    subprocess.run(["callgrind_control", *arguments, str(pid)], check=True, capture_output=True)


def total(out: Path, module: str, pid: int) -> int:
    """The instructions of the newest dump of ``module`` (callgrind names them ``<module>.<pid>.<n>``)."""
    dumps = sorted(out.glob(f"{module}.{pid}.*"), key=lambda path: int(path.suffix[1:]))
    for line in dumps[-1].read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no total in {dumps[-1]}")


def measure(code_root: Path, requests: int, windows: int = 3) -> dict[str, dict[str, float]]:
    """{kind: {process: instructions per request}} for the code in ``code_root``: the least over ``windows``
    windows of ``requests`` requests each."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind"
        out.mkdir()
        with upstream_and_ours(Path(tmp), start_timeout=600.0, code_root=code_root,
                               launchers={module: callgrind(out, module) for module in COUNTED}) as (net, _):
            key = net.create_api_key("bench")
            pids = {"api": net.processes["api"].pid,
                    "miner": next(p.pid for name, p in net.processes.items() if name.startswith("miner"))}
            counts: dict[str, dict[str, float]] = {}
            for kind, stream in KINDS.items():
                send(net.api_url, key, stream, 30)
                counts[kind] = {module: float("inf") for module in pids}
                for _ in range(windows):  # the least of the windows: background requests add, never take away
                    for pid in pids.values():
                        control(pid, "--instr=on")
                        control(pid, "--zero")
                    send(net.api_url, key, stream, requests)
                    for pid in pids.values():
                        control(pid, "--dump")
                        control(pid, "--instr=off")
                    for module, pid in pids.items():
                        counts[kind][module] = min(counts[kind][module], total(out, module, pid) / requests)
            return counts


def worktree(ref: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref], check=True,
                   capture_output=True)
    return where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="counted requests per window")
    parser.add_argument("--windows", type=int, default=3, help="counting windows per kind (the least is kept)")
    parser.add_argument("--compare", metavar="REF", help="also measure this git ref, first")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind not found: apt-get install -y valgrind")
    results: dict[str, dict[str, dict[str, float]]] = {}
    if args.compare:
        with tempfile.TemporaryDirectory() as tmp:
            other = worktree(args.compare, Path(tmp) / "checkout")
            try:
                results[args.compare] = measure(other, args.requests, args.windows)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)],
                               capture_output=True)
    results["this checkout"] = measure(ROOT, args.requests, args.windows)
    print(f"instructions per request (the least of {args.windows} windows of {args.requests} requests per kind, "
          "one at a time; callgrind)")
    print(f"{'case':<22}{'version':<16}" + "".join(f"{module:>14}" for module in COUNTED))
    for kind in KINDS:
        for version, counts in results.items():
            print(f"{kind:<22}{version[:15]:<16}" + "".join(f"{counts[kind][m]:>14,.0f}" for m in COUNTED))
        if args.compare:
            base, now = results[args.compare][kind], results["this checkout"][kind]
            print(f"{'':<22}{'ratio':<16}" + "".join(f"{now[m] / base[m]:>14.3f}" for m in COUNTED))


if __name__ == "__main__":
    main()

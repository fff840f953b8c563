"""Two source trees side by side: ``bench_peer.py`` run from each in turn, then medians and spreads per case.

    git -C . archive <base-commit> | tar -x -C /tmp/base            # the "before" tree
    .venv/bin/python bench/compare.py --base /tmp/base [--runs 3] [--seconds 4] [--litellm]

On a shared machine one run of a benchmark says little: a neighbour's test run
moves throughput by tens of per cent. This runs ``bench/bench_peer.py`` from the
base tree and from this tree alternately (base, this, this, base, base, …), so
that a change in the machine's load hits both alike, with the same Python
environment (this one's), and prints for every case and target the median of
the runs and their range: requests/s, p50, p99, p99/p50, added p50 (p50 minus
the upstream's p50 in the same run) and CPU µs per request of each process.
With ``--litellm`` the LiteLLM column comes along (from every run) and the
ratio ours/LiteLLM is taken run by run. The load average before each run is
printed with it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ROW = re.compile(r"^(?P<case>(?:non-stream|stream 20 chunks), c=\d+)\s+(?P<target>direct|litellm|ours)\s+"
                 r"(?P<rps>\d+)\s+(?P<p50>[\d.]+)\s+(?P<p99>[\d.]+)\s+(?P<errors>\d+)\s+(?P<gateway>\d+)\s+"
                 r"(?P<upstream>\d+)\s+(?P<load>\d+)\s+(?P<sum>\d+)(?:\s+\((?P<split>[^)]*)\))?")


def parse(output: str) -> dict[tuple[str, str], dict[str, float]]:
    """``{(case, target): {"rps": …, "p50": …, "p99": …, "api": …, …}}`` from bench_peer's printed rows."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for line in output.splitlines():
        match = ROW.match(line)
        if not match:
            continue
        row = {name: float(match[name]) for name in ("rps", "p50", "p99", "errors", "gateway")}
        for part in (match["split"] or "").split(","):
            if part.strip():
                name, value = part.split()
                row[name] = float(value)
        rows[(match["case"], match["target"])] = row
    for (case, target), row in rows.items():
        direct = rows.get((case, "direct"))
        if direct is not None and target != "direct":
            row["added"] = row["p50"] - direct["p50"]
        row["tail"] = row["p99"] / row["p50"] if row["p50"] else float("nan")
    for (case, target), row in rows.items():
        peer = rows.get((case, "litellm"))
        if target == "ours" and peer is not None and peer["rps"]:
            row["vs_litellm"] = row["rps"] / peer["rps"]
    return rows


def run(tree: Path, seconds: float, litellm: bool) -> tuple[str, dict]:
    command = [sys.executable, str(tree / "bench" / "bench_peer.py"), "--seconds", str(seconds)]
    if litellm:
        command += ["--venv", str(ROOT / "bench" / ".peer-venv")]
    else:
        command.append("--skip-litellm")
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_peer failed in {tree}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return load, parse(done.stdout)


def spread(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:.{digits}f}"
    return f"{middle:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


COLUMNS = [("rps", 0), ("vs_litellm", 1), ("p50", 2), ("added", 2), ("p99", 2), ("tail", 1), ("api", 0),
           ("miner", 0), ("validator", 0), ("litellm", 0)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, required=True, help="the other source tree (e.g. a git archive)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tree")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--litellm", action="store_true", help="include LiteLLM (bench/.peer-venv)")
    args = parser.parse_args()

    trees = {"base": args.base.resolve(), "this": ROOT}
    order = [name for index in range(args.runs) for name in (("base", "this") if index % 2 == 0 else ("this", "base"))]
    results: dict[str, list[dict]] = defaultdict(list)
    for name in order:
        load, rows = run(trees[name], args.seconds, args.litellm)
        results[name].append(rows)
        ours = {case: row for (case, target), row in rows.items() if target == "ours"}
        summary = ", ".join(f"{case} {row['rps']:.0f}/s" for case, row in ours.items())
        print(f"{name:<5} load {load}: {summary}", flush=True)

    cases = sorted({key for runs in results.values() for rows in runs for key in rows},
                   key=lambda key: (key[0].startswith("stream"), int(key[0].rsplit("=", 1)[1]), key[1]))
    print()
    print("medians over the runs (min–max); added = p50 minus the upstream's p50 in the same run; "
          "api/miner/validator/litellm = CPU µs per request")
    header = f"{'case':<24}{'target':<9}{'tree':<6}" + "".join(f"{name:>19}" for name, _ in COLUMNS)
    print(header)
    for case, target in cases:
        for name in ("base", "this"):
            rows = [run_rows[(case, target)] for run_rows in results[name] if (case, target) in run_rows]
            if not rows:
                continue
            cells = []
            for column, digits in COLUMNS:
                if column == "litellm":
                    values = [row["gateway"] for row in rows] if target == "litellm" else []
                else:
                    values = [row[column] for row in rows if column in row]
                cells.append(f"{spread(values, digits):>19}")
            print(f"{case:<24}{target:<9}{name:<6}" + "".join(cells))


if __name__ == "__main__":
    main()

"""Where one answer's round trip goes, hop by hop: spans inside the API worker and the miner, joined with the client's.

    .venv/bin/python bench/timeline.py [--seconds 8] [--concurrency 1] [--stream]

Starts what ``bench/bench_peer.py`` starts for "ours" (fake upstream, one upstream-backed reference miner,
the validator, one API worker) with ``bench/spans`` on ``PYTHONPATH``: its ``sitecustomize`` records when
each request entered and left the API worker's chat entry, each miner call, and the miner's handler, and
when the worker sent a scoring batch or a request-log batch (``bench/spans/sitecustomize.py``). Then it
drives load with ``bench/load.py --trace`` and joins every answer with its spans by time
(``perf_counter()`` is one clock for every process), and prints, in µs, the median of each segment:

    client → API        the request's bytes to the API worker's chat entry (wake-up, HTTP parsing, ASGI)
    API → call          the worker's work before the miner call: key, body, model, routing, admission
    call → miner        the call's bytes to the miner's handler (signing, the hop, the miner's HTTP parsing)
    miner               the miner's handler (verification, the upstream round trip, its answer)
    miner → call end    the answer back to the worker's call (the hop, reading, parsing)
    call end → exit     the worker's work after the call: the completion, its bytes, the stream's relay
    exit → client       the answer's bytes to the client (the write at the end of the loop's turn, the hop)

for typical answers and for slow ones (over ``--slow`` times the median), how many slow answers overlapped a
scoring batch or a request-log batch of the worker, and the scheduler's view of each process over the run
(``/proc/PID/task/*/schedstat``): CPU and time spent runnable but waiting for a CPU, per answer.

An answer is joined with the first spans that start after it was sent: right when one request is in flight
at a time (the default, c=1). With ``--concurrency`` above 1 requests overlap, so only the scheduler's view
is printed.
"""

from __future__ import annotations

import argparse
import bisect
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_peer import upstream_and_ours  # noqa: E402
from bench.measure import family, machine_line, run_load  # noqa: E402

SEGMENTS = ("client → API", "API → call", "call → miner", "miner", "miner → call end", "call end → exit",
            "exit → client")


def read_spans(path: Path) -> dict[str, list[tuple[float, float]]]:
    """``{kind: [(start, end), …]}`` sorted by start, from one process's ``.spans`` file."""
    spans: dict[str, list[tuple[float, float]]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            start, end, kind = line.split()
            spans.setdefault(kind, []).append((float(start), float(end)))
    for values in spans.values():
        values.sort()
    return spans


def first_at_or_after(spans: list[tuple[float, float]], moment: float) -> tuple[float, float] | None:
    index = bisect.bisect_left(spans, (moment, float("-inf")))
    return spans[index] if index < len(spans) else None


def segments(start: float, end: float, api: dict, miner: dict) -> tuple[float, ...] | None:
    """The seven segments of one answer (µs), or None when a span is missing (warm-up, the run's edges)."""
    entry = first_at_or_after(api.get("api", []), start)
    if entry is None or entry[1] > end:
        return None
    call = first_at_or_after(api.get("call", []), entry[0])
    if call is None or call[1] > entry[1]:
        return None
    handler = first_at_or_after(miner.get("miner", []), call[0])
    if handler is None or handler[1] > call[1]:
        return None
    moments = (start, entry[0], call[0], handler[0], handler[1], call[1], entry[1], end)
    return tuple((b - a) * 1e6 for a, b in zip(moments, moments[1:]))


def overlaps(spans: list[tuple[float, float]], start: float, end: float) -> bool:
    """Whether any span (sorted by start; batches do not overlap each other) overlaps [start, end]."""
    index = bisect.bisect_right(spans, (end, float("inf")))
    return index > 0 and spans[index - 1][1] >= start


def schedstat(pids: list[int]) -> dict[int, tuple[int, int, int]]:
    """Per process, summed over its threads: ns on a CPU, ns runnable but waiting, time slices."""
    totals: dict[int, tuple[int, int, int]] = {}
    for pid in pids:
        run = wait = slices = 0
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                a, b, c = (int(v) for v in (task / "schedstat").read_text().split())
            except (OSError, ValueError):
                continue
            run, wait, slices = run + a, wait + b, slices + c
        totals[pid] = (run, wait, slices)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--slow", type=float, default=3.0, help="an answer is slow above this many medians")
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        spans_dir = directory / "spans"
        spans_dir.mkdir()
        os.environ["BENCH_SPANS_DIR"] = str(spans_dir)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "bench" / "spans"),
                                                                  os.environ.get("PYTHONPATH")]))
        with upstream_and_ours(directory) as (net, _):
            key = net.create_api_key("bench")
            miner = net.member("miner")
            api_pid = net.processes["api"].pid
            miner_pid = next(p.pid for name, p in net.processes.items() if name.startswith("miner"))
            processes = {"api": family(api_pid), "miner": family(miner_pid),
                         "validator": family(net.processes["validator"].pid)}
            target = ["--url", net.api_url, "--key", key, "--uid", str(miner.uid),
                      "--concurrency", str(args.concurrency), *(["--stream"] if args.stream else [])]
            run_load([*target, "--seconds", "2"], {})
            time.sleep(1.5)  # the warm-up's spans are written; then they are dropped
            for path in spans_dir.glob("*.spans"):
                path.unlink()
            trace = directory / "trace.txt"
            names = {pid: name for name, group in processes.items() for pid in group}
            run = run_load([*target, "--seconds", str(args.seconds), "--trace", str(trace)], {},
                           probe=lambda load_pid: schedstat([*names, load_pid]))
            before, after = run["probe"]
            time.sleep(1.5)  # every process writes its spans once a second
            api_spans = read_spans(spans_dir / f"{api_pid}.spans")
            miner_spans = read_spans(spans_dir / f"{miner_pid}.spans")
            answers = [(float(end) - float(latency_ms) / 1000, float(end))
                       for _, latency_ms, end in (line.split() for line in trace.read_text().splitlines())]
    if args.concurrency == 1:
        report(answers, api_spans, miner_spans, args.slow)
    else:
        print(f"{len(answers)} answers at c={args.concurrency}: requests overlap, no hop-by-hop join")
    print("\nscheduler, per answer (µs): on a CPU | runnable, waiting for a CPU | time slices")
    count = max(1, len(answers))
    for pid in after:
        run, wait, slices = (b - a for a, b in zip(before[pid], after[pid]))
        print(f"  {names.get(pid, 'load'):<10} {run / 1e3 / count:8.1f} | {wait / 1e3 / count:8.1f} | "
              f"{slices / count:5.2f}")


def report(answers: list[tuple[float, float]], api: dict, miner: dict, slow_factor: float) -> None:
    joined = [(start, end, row) for start, end in answers if (row := segments(start, end, api, miner))]
    if not joined:
        print("no answer could be joined with its spans")
        return
    median = statistics.median(end - start for start, end, _ in joined)
    typical = [row for start, end, row in joined if end - start <= slow_factor * median]
    slow = [(start, end, row) for start, end, row in joined if end - start > slow_factor * median]
    share = sum(end - start for start, end, _ in slow) / sum(end - start for start, end, _ in joined)
    print(f"{len(answers)} answers, {len(joined)} joined with their spans; median {median * 1e6:.0f} µs; "
          f"{len(slow)} slow (> {slow_factor:g}x the median), {share:.0%} of the time")
    print(f"{'segment (median µs)':<20}{'typical':>10}{'slow':>10}")
    for index, name in enumerate(SEGMENTS):
        slow_median = statistics.median(row[index] for _, _, row in slow) if slow else float("nan")
        print(f"{name:<20}{statistics.median(row[index] for row in typical):>10.0f}{slow_median:>10.0f}")
    for kind in ("forward", "record"):
        hit = sum(1 for start, end, _ in slow if overlaps(api.get(kind, []), start, end))
        print(f"slow answers during one of the worker's {kind} batches: {hit} of {len(slow)}")


if __name__ == "__main__":
    main()

"""How long another writer waits for the API's SQLite file while a busy worker writes its request logs.

    .venv/bin/python bench/bench_log_lock.py [--seconds 8] [--concurrency 32]

With SQLite, every writer of a host (the API workers' debits, refunds, rate-limit checks and request-log
batches; the CLI) takes the file's one write lock, so a request-log batch that holds it for long makes
the other workers' debits wait. A batch runs on the store's thread beside the worker's busy event loop
and needs the GIL between its statements, so its length under load depends on how often it needs it.

This starts what ``bench/bench_peer.py`` starts for "ours" (fake upstream, one upstream-backed reference
miner, the validator, ONE API worker), drives whole-answer load at the API, and meanwhile, from this
process, takes the API's write lock the way a second worker's debit does (``BEGIN IMMEDIATE``, then
``ROLLBACK``) every 20 ms, timing each wait. It prints the requests/s and the waits' median, p99 and
maximum. Run it from two source trees (``git archive <commit>``) to compare.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_peer import upstream_and_ours  # noqa: E402
from bench.measure import run_load  # noqa: E402


def probe(path: Path, stop: threading.Event, waits: list[float]) -> None:
    db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    try:
        while not stop.is_set():
            started = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            waits.append(time.perf_counter() - started)
            db.execute("ROLLBACK")
            time.sleep(0.02)
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, upstream_and_ours(Path(tmp)) as (net, _):
        key = net.create_api_key("bench")
        miner = net.member("miner")
        target = ["--url", net.api_url, "--key", key, "--uid", str(miner.uid)]
        run_load([*target, "--concurrency", "4", "--seconds", "2"], {})  # warm-up
        database = net.directory / "data" / "api" / "api.sqlite"
        stop, waits = threading.Event(), []
        prober = threading.Thread(target=probe, args=(database, stop, waits))
        prober.start()
        try:
            result = run_load([*target, "--concurrency", str(args.concurrency), "--seconds", str(args.seconds)], {})
        finally:
            stop.set()
            prober.join()
    waits.sort()
    print(f"{ROOT.name}: c={args.concurrency} whole answers, {result['rps']:.0f} requests/s; another writer's wait "
          f"for the write lock over {len(waits)} tries: median {statistics.median(waits) * 1e3:.2f} ms, "
          f"p99 {waits[int(len(waits) * 0.99)] * 1e3:.1f} ms, max {waits[-1] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()

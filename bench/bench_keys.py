"""What a key's metering costs per request: unlimited, with credits, with a rate limit, with both.

    .venv/bin/python bench/bench_keys.py [--seconds 3] [--rounds 2] [--redis redis://127.0.0.1:6379/0]

The other benchmarks use an unlimited key, which the admission path lets through
without a store call. An operator's keys usually have credits (a debit per
request, exact across workers) and a rate limit (a sliding log, in the SQL store
or in Redis when ``--redis`` is given). This starts what ``bench/bench_peer.py``
starts for "ours" (the fake upstream, one reference miner with the upstream
backend, the validator, ONE API worker), makes four keys, and drives each at
concurrency 1 and 32 with ``bench/load.py``, rounds interleaved; it prints
requests/s, p50, p99 and the API worker's CPU µs per request. The rate limit is
high enough never to refuse (1,000,000 per minute), so every request is
admitted and the log holds every request of the last minute: the worst case for
the log's size.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_peer import upstream_and_ours  # noqa: E402
from bench.measure import family, machine_line, run_load  # noqa: E402
from localnet.launcher import get_json  # noqa: E402

KINDS = {
    "unlimited": "",
    "credits": "credits=1000000000",
    "rate limit": "rate_limits=1000000%20per%20minute",
    "both": "credits=1000000000&rate_limits=1000000%20per%20minute",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--redis", default="", help="REDIS_URL for the API worker's rate limits (default: the store)")
    args = parser.parse_args()
    if args.redis:  # the API worker reads these from its environment
        os.environ["REDIS_URL"] = args.redis
        os.environ["REDIS_PREFIX"] = f"bench-keys-{uuid.uuid4().hex[:8]}:"
    else:
        os.environ.pop("REDIS_URL", None)

    with tempfile.TemporaryDirectory() as tmp, upstream_and_ours(Path(tmp)) as (net, _):
        print(machine_line())
        print(f"rate limits in {'Redis' if args.redis else 'the store (SQLite)'}; {args.seconds:g} s per run")
        miner = net.member("miner")
        keys = {}
        for kind, fields in KINDS.items():
            key = net.create_api_key(kind.replace(" ", "-"))
            if fields:
                get_json(f"{net.api_url}/api_management/modify-api-key/{key}?{fields}",
                         headers={"admin-key": net.admin_key}, method="PUT")
            keys[kind] = key
        servers = {"api": family(net.processes["api"].pid)}
        print(f"{'case':<8}{'key':<12}{'rps':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'API µs/req':>12}")
        for concurrency in (1, 32):
            for _ in range(args.rounds):
                for kind, key in keys.items():
                    result = run_load(["--url", net.api_url, "--key", key, "--uid", str(miner.uid),
                                       "--concurrency", str(concurrency), "--seconds", str(args.seconds)], servers)
                    print(f"{'c=' + str(concurrency):<8}{kind:<12}{result['rps']:>8.0f}{result['p50_ms']:>9.2f}"
                          f"{result['p99_ms']:>9.2f}{result['errors']:>8}{result['cpu_us']['api']:>12.0f}",
                          flush=True)

if __name__ == "__main__":
    main()

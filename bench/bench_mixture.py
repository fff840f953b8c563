"""Mixture-of-miners latency against single-miner latency, on a local subnet with a slow miner.

    .venv/bin/python bench/bench_mixture.py [--rounds 5]

Starts a subnet (miners: good, slow, slow — a slow miner waits 1.5 s before
its first chunk) on free ports, then through the ``openai`` SDK measures the
median wall time of: each miner alone (``uids=[uid]``), the mixture of all
three (``mixture: true``, non-streamed, and streamed: first content chunk and
end), and prints them with the sum of the single-miner times, which is what
a mixture that asked its miners one after another would cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openai import OpenAI  # noqa: E402

from localnet.launcher import LocalSubnet, free_port  # noqa: E402

BEHAVIOURS = ["good", "slow", "slow"]
MESSAGES = [{"role": "user", "content": "What does a validator do with the answers it scores?"}]


def median_seconds(rounds: int, call) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def streamed(client: OpenAI, uids: list[int]) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    for chunk in client.chat.completions.create(model="default", messages=MESSAGES, stream=True,
                                                extra_body={"uids": uids, "mixture": True}):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    net = LocalSubnet(Path(tempfile.mkdtemp(prefix="bench-mixture-")), api_port=free_port(),
                      validator_port=free_port(), miner_ports=[free_port() for _ in BEHAVIOURS],
                      behaviours=BEHAVIOURS, api_workers=1, web_port=free_port())
    net.start()
    try:
        client = OpenAI(base_url=net.api_url + "/v1", api_key=net.create_api_key("bench"), max_retries=0, timeout=60)
        uids = {f"uid {m.uid} {m.behaviour}": m.uid for m in net.members if m.role == "miner"}

        def ask(**extra):
            return lambda: client.chat.completions.create(model="default", messages=MESSAGES, extra_body=extra)

        ask(uids=list(uids.values()))()  # warm the connections
        singles = {b: median_seconds(args.rounds, ask(uids=[u])) for b, u in uids.items()}
        mixture = median_seconds(args.rounds, ask(uids=list(uids.values()), mixture=True))
        streams = [streamed(client, list(uids.values())) for _ in range(args.rounds)]
        first_chunk = statistics.median(s[0] for s in streams)
        stream_end = statistics.median(s[1] for s in streams)
    finally:
        net.stop()

    print(f"median of {args.rounds} rounds, seconds")
    rows = [(f"single miner, {name}", f"{seconds:.3f}") for name, seconds in singles.items()]
    rows += [("sum of the single-miner times", f"{sum(singles.values()):.3f}"),
             ("mixture of the three", f"{mixture:.3f}"),
             ("mixture streamed: first chunk, end", f"{first_chunk:.3f}, {stream_end:.3f}")]
    for label, value in rows:
        print(f"  {label:<36} {value}")


if __name__ == "__main__":
    main()

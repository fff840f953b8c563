"""Who answers default requests, how good and how fast: the routing policy before and after.

    .venv/bin/python bench/bench_routing.py [--requests 300] [--concurrency 4] [--demo-validator]

Starts the demo's five miners (good, noisy, slow, broken, copy-cat), a
validator with quick rounds (weights every 3 s), and five API processes on
the same store and validator, one per routing setting:

- ``uniform``: ``ROUTING_POLICY=uniform``, the policy before: a uniform sample
  of ``TOP_POOL`` miners, the first content chunk wins, no breakers;
- ``rated, commit 1``: rated routing, a stream's miner chosen at its first
  content chunk;
- ``rated``: the default (``STREAM_COMMIT_CHUNKS=2``);
- ``floor 0.5`` with and without ``RACE_PATIENCE_SECONDS``: the noisy miner
  in the band too, to show what the race's preference for better-rated
  miners does.

Once three weight steps have passed, each sends ``--requests`` default
requests whole and as many streamed through the ``openai`` SDK, and reports:
the share answered by each miner, quality (mean validator score of the miner
that answered, against the best miner's score), latency p50/p99 (to the whole
answer; for streams to the first content and to the end), and every error the
client saw. Last, the content chunks miners sent before their streams broke,
from ``gateway_miner_stream_break_chunks`` (what the commit point is chosen
from).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai  # noqa: E402
from openai import OpenAI  # noqa: E402

from localnet.launcher import LocalSubnet, free_port  # noqa: E402
from shared.auth import Signer  # noqa: E402
from shared.signed_http import SignedClient  # noqa: E402
from shared.wallet import load_hotkey  # noqa: E402

BEHAVIOURS = ["good", "noisy", "slow", "broken", "copycat"]
MESSAGES = [{"role": "user", "content": "What does a validator do with the answers it scores?"}]
VALIDATOR = {"synthetic_interval_seconds": 0.2, "weights_interval_seconds": 3, "synthetic_timeout": 5.0,
             "task_mix": "InferenceTask:0.5,WebQuestionAnsweringTask:0.5"}
SETTINGS = {"uniform": {"routing_policy": "uniform"},
            "rated, commit 1": {"routing_policy": "rated", "stream_commit_chunks": 1},
            "rated": {"routing_policy": "rated"},
            # what the race's patience does when a fast, worse miner is in the band (noisy, with a low floor)
            "floor 0.5, no patience": {"routing_policy": "rated", "routing_floor": 0.5, "race_patience_seconds": 0},
            "floor 0.5": {"routing_policy": "rated", "routing_floor": 0.5}}


def scores(net: LocalSubnet) -> dict:
    member = net.member("validator")
    signer = Signer(load_hotkey(member.name, "default", str(net.wallet_path)))

    async def get() -> dict:
        client = SignedClient(signer)
        try:
            return await client.get_json(net.validator_url, "/scores", receiver=signer.hotkey)
        finally:
            await client.close()

    return asyncio.run(get())


def wait_for_weights(net: LocalSubnet, steps: int = 3) -> dict[int, dict]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        table = scores(net)
        rows = {row["uid"]: row for row in table["scores"]}
        if table["weight_steps"] >= steps and len(rows) == len(BEHAVIOURS) and min(
                r["rewards"] for r in rows.values()) >= 25:
            return rows
        time.sleep(1)
    raise TimeoutError("weights did not settle")


def start_api(net: LocalSubnet, name: str, settings: dict) -> str:
    port = free_port()
    env = net._env(net.member("validator"), api_port=port, api_workers=2, validator_url=net.validator_url,
                   admin_key=net.admin_key, directory_refresh_seconds=1, web_fetch_allow_private=True, **settings)
    env["DATA_DIR"] = str(net.directory / "data" / "api")
    net.spawn(f"api-{name.replace(' ', '').replace(',', '-')}", "api", env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if LocalSubnet._api_ready(url, len(BEHAVIOURS)):
            return url
        time.sleep(0.2)
    raise TimeoutError(f"{name} API did not start")


def one(client: OpenAI, stream: bool):
    started = time.perf_counter()
    try:
        if not stream:
            reply = client.chat.completions.create(model="default", messages=MESSAGES)
            return reply.miner_uid, time.perf_counter() - started, None
        uid, first = None, None
        for chunk in client.chat.completions.create(model="default", messages=MESSAGES, stream=True):
            uid = chunk.miner_uid
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
        return uid, time.perf_counter() - started, first
    except openai.OpenAIError as exc:
        return f"{type(exc).__name__}: {str(exc)[:120]}", time.perf_counter() - started, None


def run(client: OpenAI, count: int, concurrency: int, stream: bool) -> list:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: one(client, stream), range(count)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(label: str, results: list, rows: dict[int, dict], names: dict[int, str]) -> None:
    answered = Counter(r[0] for r in results if isinstance(r[0], int))
    errors = [r[0] for r in results if not isinstance(r[0], int)]
    best = max(row["score"] for row in rows.values())
    served = [max(rows[uid]["score"], 0.0) for uid in answered.elements()]
    total = len(results)
    share = ", ".join(f"{names[uid]} {answered[uid] / total:.0%}" for uid in sorted(names) if answered[uid])
    quality = statistics.fmean(served) / best if served and best > 0 else float("nan")
    ends = [r[1] for r in results if isinstance(r[0], int)]
    firsts = [r[2] for r in results if r[2] is not None]
    latency = f"p50 {percentile(ends, 0.5) * 1000:7.1f} ms  p99 {percentile(ends, 0.99) * 1000:7.1f} ms"
    if firsts:
        latency += f"  (first content p50 {percentile(firsts, 0.5) * 1000:.1f} ms, p99 " \
                   f"{percentile(firsts, 0.99) * 1000:.1f} ms)"
    print(f"  {label:<26} quality {quality:5.3f}  errors {len(errors):3d}/{total}  {latency}")
    print(f"  {'':<26} answered by: {share}")
    for error, count in Counter(errors).most_common(2):
        print(f"  {'':<26} {count} x {error}")


def break_chunks(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        match = re.match(r'gateway_miner_stream_break_chunks_bucket\{le="([^"]+)"\} ([0-9.e+]+)', line)
        if match:
            found[match.group(1)] = found.get(match.group(1), 0) + float(match.group(2))
    return {f"<={float(le):g}": int(n) for le, n in found.items() if le != "+Inf" and float(le) <= 4} | (
        {"all": int(found["+Inf"])} if "+Inf" in found else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--demo-validator", action="store_true",
                        help="the demo's validator settings (weights every 20 s) instead of quick ones")
    args = parser.parse_args()
    net = LocalSubnet(Path(tempfile.mkdtemp(prefix="bench-routing-")), api_port=free_port(),
                      validator_port=free_port(), miner_ports=[free_port() for _ in BEHAVIOURS],
                      behaviours=BEHAVIOURS, api_workers=1, web_port=free_port(),
                      validator_settings=None if args.demo_validator else VALIDATOR)
    net.start()
    try:
        key = net.create_api_key("bench")
        urls = {name: start_api(net, name, settings) for name, settings in SETTINGS.items()}
        rows = wait_for_weights(net)
        time.sleep(2)
        names = {m.uid: m.behaviour for m in net.members if m.role == "miner"}
        print("validator after three weight steps: " + ", ".join(
            f"{names[uid]} score {row['score']:.3f} weight {row['weight']:.3f}" for uid, row in sorted(rows.items())))
        print(f"{args.requests} default requests each, {args.concurrency} at a time, openai SDK; "
              f"quality = mean validator score of the answering miner / best miner's score")
        clients = {name: OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
                   for name, url in urls.items()}
        for client in clients.values():
            run(client, 8, args.concurrency, True)  # warm the connections
        for stream in (False, True):
            # the settings take turns, a tenth of the requests at a time, so each sees the same load
            results = {name: [] for name in clients}
            for _ in range(10):
                for name, client in clients.items():
                    results[name] += run(client, args.requests // 10, args.concurrency, stream)
            for name in clients:
                report(f"{name}, {'streamed' if stream else 'whole'}", results[name], rows, names)
        for name, url in urls.items():
            print(f"  content chunks before a stream broke ({name}): {break_chunks(url) or 'no breaks'}")
    finally:
        net.stop()
        for name in list(net.processes):
            net.stop_process(name)


if __name__ == "__main__":
    main()

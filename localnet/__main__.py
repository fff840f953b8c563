"""``python -m localnet``: run a whole subnet on this machine until Ctrl-C.

A miner that exits is reported and not restarted: the subnet goes on without it
(the validator drops it from the directory at its next availability poll, the
API routes to the others), as a real subnet does when a miner goes away. The
validator or an API process exiting stops the demo: it cannot serve without
them. Ctrl-C (or SIGTERM, SIGHUP) stops every process; pressed again while
stopping, it kills them at once. Either way, no process is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path

from shared.auth import Signer
from shared.signed_http import SignedCallError, SignedClient
from shared.wallet import load_hotkey

from .launcher import DEFAULT_BEHAVIOURS, LocalSubnet

SCORE_EVERY_SECONDS = 20.0


def score_table(net: LocalSubnet, signer: Signer) -> str:
    """The validator's view, by miner behaviour: how the miners separate over time."""

    async def fetch() -> dict:
        client = SignedClient(signer)
        try:
            return await client.get_json(net.validator_url, "/scores", receiver=signer.hotkey)
        finally:
            await client.close()

    try:
        table = asyncio.run(fetch())
    except SignedCallError as exc:
        return f"(scores unavailable: {exc})"
    rows = {row["uid"]: row for row in table["scores"]}
    lines = [f"validator scores after {table['weight_steps']} weight steps:"]
    for member in sorted((m for m in net.members if m.role == "miner"), key=lambda m: -rows.get(m.uid, {}).get(
            "score", 0.0)):
        row = rows.get(member.uid, {"score": 0.0, "weight": 0.0, "rewards": 0})
        probation = "  on probation (caught cheating)" if row.get("probation_until") else ""
        lines.append(f"  uid {member.uid} {member.behaviour:<8} score {row['score']:>7.3f}  weight {row['weight']:.3f}"
                     f"  ({row['rewards']} rewards){probation}")
    return "\n".join(lines)


def banner(net: LocalSubnet, key: str) -> str:
    miners = "\n".join(f"    uid {m.uid}: {m.behaviour:<7} {m.axon}" for m in net.members if m.role == "miner")
    return f"""
Local subnet is up (state in {net.directory}, logs in {net.directory}/logs).
  validator  uid 0  {net.validator_url}
  API        {net.api_url}  ({net.api_workers} workers)
  web pages  {net.web_url}/  (the corpus, for web retrieval)
  miners (reference miner, builtin backend):
{miners}

Demo API key: {key}
Admin key:    stored in {net.directory}/admin-key
Dashboard:    {net.api_url}/dashboard   (log in with the admin key: cat {net.directory}/admin-key)
Metrics:      {net.api_url}/metrics  and  {net.validator_url}/metrics
Probes:       {net.api_url}/health/readiness  and  {net.validator_url}/health/readiness
Keys, usage, logs:  DATA_DIR={net.directory}/data/api python -m api.cli keys list   (or: usage, logs)

Try it:
  curl -s {net.api_url}/v1/chat/completions -H "Authorization: Bearer {key}" \\
       -H "Content-Type: application/json" \\
       -d '{{"messages": [{{"role": "user", "content": "What is Bittensor?"}}], "stream": false}}'

  curl -s "{net.api_url}/web_retrieval?search_query=Why+do+leaves+look+green&n_results=2" \\
       -H "Authorization: Bearer {key}"

  python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{net.api_url}/v1", api_key="{key}")
stream = client.chat.completions.create(model="default", stream=True,
    messages=[{{"role": "user", "content": "What is Bittensor?"}}], extra_body={{"top_n": 2}})
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
PY

The validator scores every miner (synthetic tasks and your requests); its score
table is printed every {SCORE_EVERY_SECONDS:.0f} s. Ctrl-C stops everything.
"""


class Signals:
    """The first Ctrl-C / SIGTERM / SIGHUP stops the subnet (``KeyboardInterrupt``); any later one kills it now."""

    def __init__(self, net: LocalSubnet):
        self.net = net
        self.count = 0

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self)  # Ctrl-C works even when started as a background job

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count == 1:
            raise KeyboardInterrupt
        print("\nkilling every process now…", flush=True)
        self.net.kill_all()


def exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def watch(net: LocalSubnet, signer: Signer) -> None:
    """Until Ctrl-C, or until the validator or an API process exits: score tables, and miners that exit."""
    next_table = time.monotonic() + SCORE_EVERY_SECONDS
    while True:
        time.sleep(0.5)
        for name, code in net.exited():
            if not name.startswith("miner"):
                print(f"{name} exited ({exit_description(code)}; see {net.log_path(name)}): "
                      "the local subnet cannot serve without it; stopping", flush=True)
                return
            left = sum(1 for n, p in net.processes.items() if n.startswith("miner") and p.poll() is None)
            print(f"{name} exited ({exit_description(code)}; see {net.log_path(name)}); not restarted: the subnet "
                  f"goes on with {left} miner{'s' if left != 1 else ''}", flush=True)
        if time.monotonic() >= next_table:
            print(score_table(net, signer), flush=True)
            next_table += SCORE_EVERY_SECONDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default=".localnet", help="where wallets, the subnet file, data and logs go")
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument("--validator-port", type=int, default=8092)
    parser.add_argument("--miner-base-port", type=int, default=8101)
    parser.add_argument("--web-port", type=int, default=8093, help="where the corpus is served as web pages")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--miners", default=",".join(DEFAULT_BEHAVIOURS),
                        help="one reference miner per behaviour: good, noisy, slow, broken, copycat, junk_urls, "
                             "off_page")
    args = parser.parse_args()

    behaviours = [b.strip() for b in args.miners.split(",") if b.strip()]
    net = LocalSubnet(Path(args.dir), api_port=args.api_port, validator_port=args.validator_port,
                      miner_ports=[args.miner_base_port + i for i in range(len(behaviours))],
                      behaviours=behaviours, api_workers=args.api_workers, web_port=args.web_port)
    Signals(net).install()
    try:
        print("starting the local subnet…", flush=True)
        net.start()
        print(banner(net, net.create_api_key()), flush=True)
        validator = net.member("validator")
        watch(net, Signer(load_hotkey(validator.name, "default", str(net.wallet_path))))
    except KeyboardInterrupt:
        print("\nstopping… (Ctrl-C again: kill at once)", flush=True)
    finally:
        net.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    main()

"""An asyncio load generator: N concurrent clients for a fixed time, latency per request.

Run as its own process (``python bench/load.py …``) so that it does not share
an event loop or a core's time slice with the server it measures. Prints one
JSON line: requests, errors, rps, p50, p99 (milliseconds).

Direct-to-miner requests are signed per request (btauth/1, fresh nonce),
exactly as the API worker does; the signing cost is included, as it is there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def run(args: argparse.Namespace) -> dict:
    body = json.dumps({
        "model": "default", "messages": [{"role": "user", "content": "benchmark"}], "stream": args.stream,
        "max_tokens": args.tokens, "seed": 1, "uids": [args.uid] if args.uid is not None else None,
        **({} if args.direct else {}),
    }).encode()
    signer = None
    if args.direct:
        from shared.auth import Signer
        from shared.wallet import load_hotkey

        signer = Signer(load_hotkey(args.wallet_name, "default", args.wallet_path))
        body = json.dumps({"messages": [{"role": "user", "content": "benchmark"}], "stream": args.stream,
                           "seed": 1, "sampling_parameters": {"max_new_tokens": args.tokens}}).encode()
    path = "/v1/chat/completions"
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + args.seconds
    connector = aiohttp.TCPConnector(limit=0)

    async with aiohttp.ClientSession(connector=connector) as session:
        async def client() -> None:
            nonlocal errors
            while time.monotonic() < stop_at:
                if signer is not None:
                    headers = signer.headers("POST", path, body, receiver=args.receiver)
                else:
                    headers = {"Authorization": f"Bearer {args.key}"}
                headers["Content-Type"] = "application/json"
                started = time.perf_counter()
                try:
                    async with session.post(args.url + path, data=body, headers=headers) as response:
                        payload = await response.read()
                        ok = response.status == 200 and (not args.stream or payload.endswith(b"[DONE]\n\n"))
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1

        began = time.monotonic()
        await asyncio.gather(*(client() for _ in range(args.concurrency)))
        elapsed = time.monotonic() - began
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--uid", type=int)
    parser.add_argument("--key", default="")
    parser.add_argument("--direct", action="store_true", help="sign requests and send them to a miner")
    parser.add_argument("--receiver", default="")
    parser.add_argument("--wallet-name", default="localnet-validator")
    parser.add_argument("--wallet-path", default="")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()

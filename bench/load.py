"""A load generator: N concurrent keep-alive clients for a fixed time, latency per request.

Run as its own process (``python bench/load.py …``) so that it does not share
an event loop or a core's time slice with the server it measures. Prints one
JSON line: requests, errors, rps, p50_ms, p99_ms, and ``cpu_us_per_request``
(this process's own CPU time during the load, per good request: what it took
from the servers on a shared machine).

The client is :mod:`bench.loadclient` (asyncio protocols and httptools). The
request to an API worker is the same bytes every time, built once. A request
straight to a miner is signed per request (btauth/1, fresh nonce), exactly as
the API worker does; only the nonce and signature headers change, and the
signing cost is included, as it is there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadclient import build_request, drive, request_head  # noqa: E402

PATH = "/v1/chat/completions"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def api_body(args: argparse.Namespace) -> bytes:
    """An OpenAI request; ``uids`` (ours) only when pinned, so that any OpenAI-compatible server takes it."""
    body = {"model": args.model, "messages": [{"role": "user", "content": "benchmark"}], "stream": args.stream,
            "max_tokens": args.tokens, "seed": 1}
    if args.uid is not None:
        body["uids"] = [args.uid]
    return json.dumps(body).encode()


def signed_requests(args: argparse.Namespace, host: str) -> Callable[[], bytes]:
    """Requests to a miner: fixed head and body, a fresh nonce and signature each time."""
    from bittensor.http_auth import HEADER_NONCE, HEADER_SIGNATURE

    from shared.auth import Signer
    from shared.wallet import load_hotkey

    signer = Signer(load_hotkey(args.wallet_name, "default", args.wallet_path))
    body = json.dumps({"messages": [{"role": "user", "content": "benchmark"}], "stream": args.stream,
                       "seed": 1, "sampling_parameters": {"max_new_tokens": args.tokens}}).encode()
    fixed = {name: value for name, value in signer.headers("POST", PATH, body, receiver=args.receiver).items()
             if name not in (HEADER_NONCE, HEADER_SIGNATURE)}
    head = request_head("POST", host, PATH, {"Content-Type": "application/json", **fixed}, len(body))
    nonce_prefix = f"{HEADER_NONCE}: ".encode("latin-1")
    signature_prefix = f"\r\n{HEADER_SIGNATURE}: ".encode("latin-1")
    tail = b"\r\n\r\n" + body

    def make() -> bytes:
        headers = signer.headers("POST", PATH, body, receiver=args.receiver)
        return b"".join((head, nonce_prefix, headers[HEADER_NONCE].encode(), signature_prefix,
                         headers[HEADER_SIGNATURE].encode(), tail))

    session = None if args.sign_every_request else open_session(args, signer)
    if session is None:
        return make
    # What the API worker sends a miner that offers btsession/1: the same body, an HMAC instead of a signature.
    session_head = request_head("POST", host, PATH, {"Content-Type": "application/json"}, len(body))

    def make_in_session() -> bytes:
        headers = session.headers("POST", PATH, body)
        return b"".join((session_head, *(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items()),
                         b"\r\n", body))

    return make_in_session


def open_session(args: argparse.Namespace, signer):
    """A ``btsession/1`` session with the miner (a signed ``POST /session``), or None if it offers none."""
    import urllib.error
    import urllib.request

    import orjson

    from shared.session_client import SenderSession, accept_answer
    from shared.sessions import PATH as SESSION_PATH
    from shared.sessions import new_private_key, public_bytes

    private = new_private_key()
    own_public = public_bytes(private)
    body = orjson.dumps({"public_key": own_public.hex()})
    headers = {"Content-Type": "application/json",
               **signer.headers("POST", SESSION_PATH, body, receiver=args.receiver)}
    request = urllib.request.Request(args.url.rstrip("/") + SESSION_PATH, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 405):
            return None
        raise
    session_id, key, _ = accept_answer(answer, private, sender=signer.hotkey, receiver=args.receiver)
    return SenderSession(session_id.hex(), key, renew_at=float("inf"), expires=float("inf"))


async def run(args: argparse.Namespace) -> dict:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if args.direct:
        make_request = signed_requests(args, url.netloc)
    else:
        headers = {"Content-Type": "application/json"}
        if args.key:
            headers["Authorization"] = f"Bearer {args.key}"
        request = build_request("POST", url.netloc, url.path.rstrip("/") + PATH, headers, api_body(args))
        make_request = lambda: request  # noqa: E731
    print(f"load: {args.concurrency} clients for {args.seconds:g} s against {args.url}", file=sys.stderr, flush=True)
    cpu_before = time.process_time()
    result = await drive(host, port, make_request, concurrency=args.concurrency, seconds=args.seconds,
                         stream=args.stream, rate=args.rate)
    cpu = time.process_time() - cpu_before
    latencies = result.latencies_ms
    if args.trace:  # per answer "seconds since the first answer, latency ms, perf_counter()": where the tail comes from
        start = result.finished[0] if result.finished else 0.0  # perf_counter() is CLOCK_MONOTONIC: other processes'
        Path(args.trace).write_text("".join(f"{t - start:.6f} {ms:.3f} {t:.6f}\n"  # clocks match the third column
                                            for t, ms in zip(result.finished, latencies)))
    return {"requests": len(latencies), "errors": result.errors, "rps": len(latencies) / result.elapsed,
            "elapsed_s": result.elapsed,
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "cpu_us_per_request": cpu * 1e6 / len(latencies) if latencies else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--uid", type=int)
    parser.add_argument("--key", default="")
    parser.add_argument("--model", default="default")
    parser.add_argument("--direct", action="store_true", help="sign requests and send them to a miner")
    parser.add_argument("--receiver", default="")
    parser.add_argument("--sign-every-request", action="store_true",
                        help="direct: sign each request (btauth/1) even if the miner offers btsession/1")
    parser.add_argument("--rate", type=float, default=0.0, help="offered load: at most this many requests/s in all")
    parser.add_argument("--trace", default="", help="write each answer's end time and latency to this file")
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

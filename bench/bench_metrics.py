"""What the Prometheus metrics cost an API worker per request, in multiprocess mode (as ``python -m api`` runs).

    .venv/bin/python bench/bench_metrics.py [--requests 20000]

In-process, no network: a FastAPI app with one trivial route is called
through ASGI with and without ``MetricsMiddleware``; the difference per
request is what the metrics add to the hot path. Also times
``observe_log`` (counted off the request path, when a request is recorded)
and one ``/metrics`` render with two workers' worth of files.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")  # before prometheus_client

from fastapi import FastAPI  # noqa: E402

from api.metrics import ApiMetrics  # noqa: E402
from api.store import MinerLog, RequestLog  # noqa: E402
from shared.http_metrics import MetricsMiddleware  # noqa: E402


def build(with_metrics: bool) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/credits")
    async def credits() -> dict:
        return {"credits": None}

    if with_metrics:
        app.add_middleware(MetricsMiddleware)
        app.state.metrics = ApiMetrics(enabled=True)
    return app


async def drive(app: FastAPI, count: int) -> float:
    """Seconds per request, ASGI in and out, no sockets."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/v1/credits", "raw_path": b"/v1/credits", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        pass

    for _ in range(500):  # warm up
        await app(dict(scope), receive, send)
    started = time.perf_counter()
    for _ in range(count):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bare, metered = build(False), build(True)
    pairs = []
    for _ in range(args.rounds):
        pairs.append((asyncio.run(drive(bare, args.requests)), asyncio.run(drive(metered, args.requests))))
    base = statistics.median(p[0] for p in pairs) * 1e6
    with_metrics = statistics.median(p[1] for p in pairs) * 1e6
    print(f"per request, ASGI in-process: {base:.1f} µs bare, {with_metrics:.1f} µs with metrics "
          f"(+{with_metrics - base:.1f} µs; {1e6 / with_metrics:,.0f} req/s of one core for the app itself)")

    metrics = metered.state.metrics
    log = RequestLog(request_id="r", key_id="k", created_at=time.time(), path="/v1/chat/completions", status=200,
                     outcome="ok", latency_ms=12.0, task="InferenceTask", prompt_tokens=5, completion_tokens=20,
                     charged=1, miners=[MinerLog(uid=u, hotkey=f"h{u}", outcome="ok", latency_ms=10.0,
                                                 first_chunk_ms=2.0, winner=u == 1) for u in (1, 2, 3)])
    started = time.perf_counter()
    for _ in range(args.requests):
        metrics.observe_log(log)
    print(f"observe_log (3 miners, off the request path): "
          f"{(time.perf_counter() - started) / args.requests * 1e6:.1f} µs")
    files = len(list(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db")))
    started = time.perf_counter()
    body = asyncio.run(metrics.render())
    print(f"/metrics render: {(time.perf_counter() - started) * 1000:.1f} ms, {len(body):,} bytes from {files} files")


if __name__ == "__main__":
    main()

"""HTTP metrics for our FastAPI processes (API workers and the validator): one middleware, one set of series.

    metrics = HttpMetrics("gateway", registry)       # requests, duration, time to first byte, errors
    app.add_middleware(MetricsMiddleware)            # reads app.state.metrics, which has ``observe_http``

Labels are the matched route's template (``/api_management/keys/{api_key}``,
never the raw path), a known method and the status, so a scan of random URLs
adds one ``unmatched`` series, not thousands. Labelled children are cached,
and what a request adds is tallied (``shared.metric_tally``): on the request path
a metric costs a few dict updates; the owner folds the tally before every scrape.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram

from .metric_tally import Tally

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class HttpMetrics:
    def __init__(self, prefix: str, registry: Optional[CollectorRegistry], tally: Optional[Tally] = None):
        self.tally = tally if tally is not None else Tally()  # folded by the owner before each scrape
        self.requests = Counter(f"{prefix}_http_requests", "HTTP requests answered, by route template and status",
                                ["method", "route", "status"], registry=registry)
        self.duration = Histogram(f"{prefix}_http_request_duration_seconds", "Request start to last byte",
                                  ["method", "route"], buckets=LATENCY_BUCKETS, registry=registry)
        self.first_byte = Histogram(f"{prefix}_http_time_to_first_byte_seconds",
                                    "Request start to the response's status line", ["method", "route"],
                                    buckets=LATENCY_BUCKETS, registry=registry)
        self.errors = Counter(f"{prefix}_http_errors", "Responses with status >= 400, by error code",
                              ["route", "status", "code"], registry=registry)
        self._children: dict[tuple, tuple] = {}

    def observe(self, method: str, route: str, status: int, seconds: float, first_byte: Optional[float],
                code: Optional[str]) -> None:
        if method not in METHODS:
            method = "OTHER"
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(method, route, str(status)),
                                               self.duration.labels(method, route),
                                               self.first_byte.labels(method, route))
        tally = self.tally
        tally.inc(children[0])
        tally.observe(children[1], seconds)
        if first_byte is not None:
            tally.observe(children[2], first_byte)
        if status >= 400:
            tally.inc(self.errors.labels(route, str(status), str(code or status)))


class MetricsMiddleware:
    """Pure ASGI (streams pass through untouched): counted after the last byte, labelled by route template."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, first_byte = 500, None

        async def timed_send(message: dict) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status, first_byte = message["status"], time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            metrics = getattr(scope["app"].state, "metrics", None)
            if metrics is not None:
                route = scope.get("route")
                state = scope.get("state") or {}
                metrics.observe_http(scope["method"], getattr(route, "path", "unmatched"), status,
                                     time.perf_counter() - started, first_byte, state.get("error_code"))

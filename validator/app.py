"""The validator's internal HTTP server and the loops it runs.

Only hotkeys on the allow-list (default: the validator's own, which its API
workers sign with) may call it; every route but ``/health`` is signed (the
routes: ``validator.routes``). What the routes and the loops share (chain,
metagraph, availability, scoring queue, score book, weight setter) is one
typed ``validator.services.Services``, opened and closed by the lifespan here::

    GET  /directory, /scores, /scoring/…, /health  → validator.routes (signed but /health)
    GET  /health/liveness, /health/readiness, /metrics  → probes and Prometheus (unsigned; see probes, metrics)
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from shared.heap import settle_heap
from shared.http_metrics import MetricsMiddleware

from . import metrics, probes, routes
from .services import Services
from .settings import ValidatorSettings


def create_app(settings: ValidatorSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = app.state.services = await Services.open(settings)
        app.state.metrics = services.metrics  # read by shared.http_metrics.MetricsMiddleware
        settle_heap()  # start-up's heap frozen, young collections rarer (shared.heap)
        try:
            yield
        finally:
            await services.close()

    app = FastAPI(title="validator (internal)", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(MetricsMiddleware)
    app.include_router(probes.router)
    if settings.metrics_enabled:
        app.include_router(metrics.router)
    app.include_router(routes.router)
    return app

"""The API worker: FastAPI app, its lifespan, and its routers.

Every worker is stateless: keys, credits, usage and logs live in the store
(SQLite, or PostgreSQL for several hosts), rate-limit counters in Redis when
configured (else in the store), the miner directory comes from the validator
(last good copy kept), and what miners answered leaves for the validator in
the background. Start any number of them.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, Optional

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from shared.heap import settle_heap
from shared.http_metrics import MetricsMiddleware
from shared.settings import configure_logging

from . import compat, dashboard
from .body_limit import BodyLimits
from .errors import install_error_handlers
from .gateway import Gateway
from .hot_path import serve_chat, takes_hot_path
from .meter import MeterMiddleware
from .routers import (
    account,
    admin_logs,
    api_management,
    availability,
    chat,
    completions,
    conversations,
    health,
    metrics,
    models,
    web_retrieval,
)
from .settings import ApiSettings, load

EXPOSED_HEADERS = ["X-Request-Id", "X-Conversation-Id", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                   "X-RateLimit-Reset", "X-RateLimit-Policy"]


class GatewayApp(FastAPI):
    """FastAPI, except that bodies are bounded first (see ``api.body_limit``) and chat completions
    skip its stack (see ``api.hot_path``)."""

    hot_path_cors = False  # CORS configured: browser requests take the FastAPI route
    body_limits: Optional[BodyLimits] = None

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http" and self.body_limits is not None:
            gated = await self.body_limits.gate(self, scope, receive, send)
            if gated is None:
                return
            receive, send = gated
        if takes_hot_path(scope, self.hot_path_cors):
            await serve_chat(self, scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = app.state.gateway = await Gateway.open(settings)
        app.state.metrics = gateway.metrics  # read by shared.http_metrics.MetricsMiddleware, as in the validator
        settle_heap()  # start-up's heap frozen, young collections rarer (shared.heap)
        try:
            yield
        finally:
            await gateway.close()

    app = GatewayApp(title="Subnet API", lifespan=lifespan)
    app.hot_path_cors = bool(settings.cors_origin_list)
    app.body_limits = BodyLimits.from_settings(settings)
    install_error_handlers(app)
    app.add_middleware(MeterMiddleware)
    app.add_middleware(MetricsMiddleware)
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=EXPOSED_HEADERS)
    for module in (chat, completions, conversations, models, web_retrieval, availability, account,
                   api_management, admin_logs, health, metrics):
        app.include_router(module.router)
    for router in compat.routers:  # btvep's /chat, llama.cpp's /completion, Unify's /get_credits
        app.include_router(router)
    if settings.dashboard_enabled:
        app.include_router(dashboard.router)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several workers: each builds its own app)."""
    settings = load()
    configure_logging(settings.log_level)
    return create_app(settings)

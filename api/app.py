"""The API worker: FastAPI app, its lifespan, and its routers.

Every worker is stateless: keys, credits, usage and logs live in the store
(SQLite, or PostgreSQL for several hosts), rate-limit counters in Redis when
configured (else in the store), the miner directory comes from the validator
(last good copy kept), and what miners answered leaves for the validator in
the background. Start any number of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Optional

import aiohttp
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from loguru import logger

from shared.auth import Signer
from shared.epistula import signer_for
from shared.http_metrics import MetricsMiddleware
from shared.settings import configure_logging
from shared.signed_http import SignedClient
from shared.wallet import load_hotkey
from shared.web_check import PageFetcher

from . import compat, dashboard
from .body_limit import BodyLimits
from .directory_client import DirectoryClient
from .errors import install_error_handlers
from .forwarder import ScoringForwarder
from .hot_path import serve_chat, takes_hot_path
from .key_admin import KeyAdmin
from .keys import KeyCache
from .meter import MeterMiddleware, record_unfinished
from .metrics import ApiMetrics
from .moderation import Moderator
from .ratelimit import RedisRateLimiter, StoreRateLimiter, parse_windows
from .recorder import Recorder
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
from .routing_service import Routing
from .settings import ApiSettings, load
from .store import open_store
from .store.conversations import Conversations
from .throttle import Throttle

EXPOSED_HEADERS = ["X-Request-Id", "X-Conversation-Id", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                   "X-RateLimit-Reset", "X-RateLimit-Policy"]


async def stop(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def prune_logs(store, retention_days: float) -> None:
    """Delete request logs older than the retention, hourly (any worker may; deleting twice is harmless)."""
    if retention_days <= 0:
        return
    while True:
        try:
            deleted = await store.prune(time.time() - retention_days * 86400)
            if deleted:
                logger.info("deleted {} request logs older than {} days", deleted, retention_days)
        except Exception as exc:
            logger.warning("log retention failed: {}", type(exc).__name__)
        await asyncio.sleep(min(3600.0, retention_days * 8640))


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
        signer = Signer(load_hotkey(settings.wallet_name, settings.wallet_hotkey, settings.wallet_path))
        validator_hotkey = settings.validator_hotkey or signer.hotkey
        # Calls to miners in MINER_PROTOCOL (btauth/1 or Epistula); to the validator always btauth/1.
        client = SignedClient(signer_for(settings.miner_protocol, signer.keypair, frozenset({validator_hotkey})))
        state = app.state
        state.settings = settings
        state.client = client
        state.rng = random.Random()
        state.admin_key_digest = settings.admin_key_digest()
        state.store = await open_store(settings.database_url, settings.sqlite_path, settings.database_schema)
        state.keys = KeyCache(state.store.key_by_hash, ttl=settings.key_cache_seconds,
                              generation=state.store.keys_generation)
        state.key_admin = KeyAdmin(state.store, state.keys)
        state.limiter = (RedisRateLimiter(settings.redis_url, settings.redis_prefix) if settings.redis_url
                         else StoreRateLimiter(state.store))
        state.default_windows = parse_windows(settings.default_rate_limits)
        state.throttle = Throttle.from_settings(state.limiter, settings)
        state.recorder = Recorder(state.store, batch_size=settings.usage_batch_size,
                                  interval=settings.usage_flush_seconds, max_buffer=settings.usage_buffer_max)
        state.metrics = ApiMetrics(enabled=settings.metrics_enabled)
        state.routing = Routing(settings, state.metrics)
        state.unrecorded = set()
        state.conversations = Conversations(state.store.db)
        state.background = set()
        # Unsigned outbound calls: pages named by web retrieval results, and the moderation endpoint.
        state.http = aiohttp.ClientSession()
        state.pages = PageFetcher(timeout=settings.web_fetch_timeout, max_bytes=settings.web_fetch_max_bytes,
                                  allow_private=settings.web_fetch_allow_private)
        state.moderator = Moderator(
            state.http, settings.moderation_url, api_key=settings.moderation_api_key.get_secret_value(),
            model=settings.moderation_model, fail_open=settings.moderation_fail_open,
            timeout=settings.moderation_timeout,
        ) if settings.moderation_url else None
        state.directory = DirectoryClient(client, settings.validator_url, validator_hotkey,
                                          Path(settings.data_dir).expanduser() / "directory-cache.json",
                                          settings.directory_refresh_seconds)
        state.directory.load_cached()
        state.forwarder = ScoringForwarder(client, settings.validator_url, validator_hotkey,
                                           batch_size=settings.forward_batch_size,
                                           interval=settings.forward_interval_seconds,
                                           max_buffer=settings.forward_buffer_max)
        with contextlib.suppress(Exception):
            await state.directory.refresh()
        if not state.admin_key_digest:
            logger.warning("no ADMIN_KEY set: /api_management refuses every call")
        tasks = [asyncio.create_task(state.directory.run(), name="directory"),
                 asyncio.create_task(state.forwarder.run(), name="forwarder"),
                 asyncio.create_task(prune_logs(state.store, settings.log_retention_days), name="retention"),
                 asyncio.create_task(state.metrics.sampler(state), name="metrics")]
        recorder_task = asyncio.create_task(state.recorder.run(), name="recorder")
        gc.freeze()  # what start-up built (bittensor, FastAPI, settings) lives forever: keep it out of collections
        logger.info("API worker up; validator {} at {}; store {}, rate limits in {}", validator_hotkey,
                    settings.validator_url, state.store.dialect, "redis" if settings.redis_url else "the store")
        try:
            yield
        finally:
            await stop(tasks)
            if state.background:
                await asyncio.wait(state.background, timeout=5.0)
            record_unfinished(state)
            state.recorder.stop()
            await asyncio.wait([recorder_task], timeout=10.0)
            await state.recorder.drain(timeout=10.0)
            await state.forwarder.drain(timeout=3.0)
            state.metrics.close(state)
            state.routing.close()
            await client.close()
            await state.http.close()
            await state.limiter.close()
            await state.store.close()

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

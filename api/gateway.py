"""The API worker's services, in one typed object opened and closed in one place.

    gateway = await Gateway.open(settings)      # in the lifespan: store, keys, limiter, directory, forwarder…
    app.state.gateway = gateway
    ...
    gateway = gateway_of(request)               # in a route or a dependency
    gateway.keep(coroutine)                     # background work the worker waits for at shutdown
    ...
    await gateway.close()                       # in the lifespan, once the server stops taking requests

Every function of the API that needs a service takes the ``Gateway`` (or the one service it needs), never
Starlette's untyped ``app.state``: what a route can reach is written here, and nowhere else. Opening
order matters only where one service is built from another (keys from the store, the throttle from the
limiter, routing from the metrics); closing runs in reverse of what depends on what: background tasks,
the backlog of responses' books, unrecorded requests, the recorder, the forwarder, then the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Coroutine, Optional

import aiohttp
from loguru import logger
from starlette.requests import Request

from shared.auth import Signer
from shared.epistula import signer_for
from shared.signed_http import SignedClient
from shared.wallet import load_hotkey
from shared.web_check import PageFetcher

from .backlog import Backlog
from .directory_client import DirectoryClient
from .forward_budget import ForwardBudget
from .forwarder import ScoringForwarder
from .key_admin import KeyAdmin
from .keys import KeyCache
from .metrics import ApiMetrics
from .miner_call import CallLimits
from .moderation import Moderator
from .ratelimit import RateLimiter, RedisRateLimiter, StoreRateLimiter, Window, parse_windows
from .recorder import Recorder
from .routing_service import Routing
from .settings import ApiSettings
from .store import Store, open_store
from .store.conversations import Conversations
from .throttle import Throttle


async def prune_logs(store: Store, retention_days: float) -> None:
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


async def stop(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass(eq=False)
class Gateway:
    """What one API worker serves with; built by ``open``, torn down by ``close``."""

    settings: ApiSettings
    client: SignedClient  # signed calls to miners (MINER_PROTOCOL) and to the validator (btauth/1)
    store: Store
    keys: KeyCache
    key_admin: KeyAdmin
    limiter: RateLimiter
    default_windows: list[Window]
    throttle: Throttle
    recorder: Recorder
    metrics: ApiMetrics
    routing: Routing
    conversations: Conversations
    http: aiohttp.ClientSession  # unsigned calls: pages named by web retrieval results, the moderation endpoint
    pages: PageFetcher
    moderator: Optional[Moderator]
    directory: DirectoryClient
    forwarder: ScoringForwarder
    admin_key_digest: bytes
    rng: random.Random = field(default_factory=random.Random)
    backlog: Backlog = field(default_factory=Backlog)  # responses' books, kept for when the worker waits
    unrecorded: set = field(default_factory=set)  # meters settled but not yet recorded (see api.meter)
    background: set = field(default_factory=set)  # tasks the worker waits for at shutdown
    tasks: list = field(default_factory=list)  # the worker's loops: directory, forwarder, retention, metrics
    recorder_task: Optional[asyncio.Task] = None

    @cached_property
    def call_limits(self) -> CallLimits:
        """Every miner call's time limits and answer cap, from the settings (``api.miner_call.CallLimits``)."""
        return CallLimits.of(self.settings)

    @classmethod
    async def open(cls, settings: ApiSettings) -> "Gateway":
        signer = Signer(load_hotkey(settings.wallet_name, settings.wallet_hotkey, settings.wallet_path))
        validator_hotkey = settings.validator_hotkey or signer.hotkey
        # Calls to miners in MINER_PROTOCOL (btauth/1 or Epistula); to the validator always btauth/1.
        client = SignedClient(signer_for(settings.miner_protocol, signer.keypair, frozenset({validator_hotkey})),
                              sessions=settings.miner_sessions)
        store = await open_store(settings.database_url, settings.sqlite_path, settings.database_schema)
        keys = KeyCache(store.key_by_hash, ttl=settings.key_cache_seconds, generation=store.keys_generation)
        limiter = (RedisRateLimiter(settings.redis_url, settings.redis_prefix) if settings.redis_url
                   else StoreRateLimiter(store))
        metrics = ApiMetrics(enabled=settings.metrics_enabled)
        http = aiohttp.ClientSession()
        gateway = cls(
            settings=settings, client=client, store=store, keys=keys, key_admin=KeyAdmin(store, keys),
            limiter=limiter, default_windows=parse_windows(settings.default_rate_limits),
            throttle=Throttle.from_settings(limiter, settings),
            recorder=Recorder(store, batch_size=settings.usage_batch_size, interval=settings.usage_flush_seconds,
                              max_buffer=settings.usage_buffer_max),
            metrics=metrics, routing=Routing(settings, metrics), conversations=Conversations(store.db), http=http,
            pages=PageFetcher(timeout=settings.web_fetch_timeout, max_bytes=settings.web_fetch_max_bytes,
                              allow_private=settings.web_fetch_allow_private),
            moderator=Moderator(
                http, settings.moderation_url, api_key=settings.moderation_api_key.get_secret_value(),
                model=settings.moderation_model, fail_open=settings.moderation_fail_open,
                timeout=settings.moderation_timeout,
            ) if settings.moderation_url else None,
            directory=DirectoryClient(client, settings.validator_url, validator_hotkey,
                                      Path(settings.data_dir).expanduser() / "directory-cache.json",
                                      settings.directory_refresh_seconds),
            forwarder=ScoringForwarder(client, settings.validator_url, validator_hotkey,
                                       batch_size=settings.forward_batch_size,
                                       interval=settings.forward_interval_seconds,
                                       max_buffer=settings.forward_buffer_max,
                                       max_bytes=settings.forward_batch_bytes,
                                       budget=ForwardBudget(per_key=settings.forward_budget_per_key,
                                                            per_miner=settings.forward_budget_per_miner,
                                                            window=settings.forward_budget_window_seconds)),
            admin_key_digest=settings.admin_key_digest(),
        )
        gateway.directory.load_cached()
        with contextlib.suppress(Exception):
            await gateway.directory.refresh()
        if not gateway.admin_key_digest:
            logger.warning("no ADMIN_KEY set: /api_management refuses every call")
        gateway.tasks = [asyncio.create_task(gateway.directory.run(), name="directory"),
                         asyncio.create_task(gateway.forwarder.run(), name="forwarder"),
                         asyncio.create_task(prune_logs(store, settings.log_retention_days), name="retention"),
                         asyncio.create_task(metrics.sampler(gateway), name="metrics")]
        gateway.recorder_task = asyncio.create_task(gateway.recorder.run(), name="recorder")
        logger.info("API worker up; validator {} at {}; store {}, rate limits in {}", validator_hotkey,
                    settings.validator_url, store.dialect, "redis" if settings.redis_url else "the store")
        return gateway

    def keep(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """Run ``coroutine`` in the background; ``close`` waits for it (a few seconds at most)."""
        task = asyncio.create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def close(self) -> None:
        from .meter import record_unfinished  # the meter needs the gateway's type; not the other way round

        await stop(self.tasks)
        if self.background:
            await asyncio.wait(self.background, timeout=5.0)
        self.backlog.close()
        await self.forwarder.settle_waiting(timeout=5.0)
        record_unfinished(self)
        self.recorder.stop()
        if self.recorder_task is not None:
            await asyncio.wait([self.recorder_task], timeout=10.0)
        await self.recorder.drain(timeout=10.0)
        await self.forwarder.drain(timeout=3.0)
        self.metrics.close(self)
        self.routing.close()
        await self.client.close()
        await self.http.close()
        await self.limiter.close()
        await self.store.close()


def gateway_of(request: Request) -> Gateway:
    """The worker's ``Gateway``, from a request (or a FastAPI dependency: ``Depends(gateway_of)``)."""
    return request.app.state.gateway

"""The API worker: FastAPI app, its lifespan, and its routers.

Every worker is stateless: keys live in the store, the miner directory comes
from the validator (last good copy kept), and what miners answered leaves for
the validator in the background. Start any number of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import aiohttp
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from loguru import logger

from shared.auth import Signer
from shared.settings import configure_logging
from shared.signed_http import SignedClient
from shared.wallet import load_hotkey
from shared.web_check import PageFetcher

from .conversations import SqliteConversationStore
from .directory_client import DirectoryClient
from .errors import install_error_handlers
from .forwarder import ScoringForwarder
from .keys import KeyStore
from .moderation import Moderator
from .routers import (
    api_management,
    availability,
    chat,
    completions,
    conversations,
    health,
    models,
    web_retrieval,
)
from .settings import ApiSettings, load

EXPOSED_HEADERS = ["X-Request-Id", "X-Conversation-Id", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"]


async def stop(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        signer = Signer(load_hotkey(settings.wallet_name, settings.wallet_hotkey, settings.wallet_path))
        validator_hotkey = settings.validator_hotkey or signer.hotkey
        client = SignedClient(signer)
        state = app.state
        state.settings = settings
        state.client = client
        state.rng = random.Random()
        state.admin_key_digest = settings.admin_key_digest()
        state.keys = KeyStore(settings.sqlite_path)
        state.conversations = SqliteConversationStore(settings.sqlite_path)
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
                 asyncio.create_task(state.forwarder.run(), name="forwarder")]
        logger.info("API worker up; validator {} at {}", validator_hotkey, settings.validator_url)
        try:
            yield
        finally:
            await stop(tasks)
            if state.background:
                await asyncio.wait(state.background, timeout=5.0)
            await state.forwarder.drain(timeout=3.0)
            await client.close()
            await state.http.close()
            state.keys.close()
            state.conversations.close()

    app = FastAPI(title="Subnet API", lifespan=lifespan)
    install_error_handlers(app)
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=EXPOSED_HEADERS)
    for module in (chat, completions, conversations, models, web_retrieval, availability, api_management, health):
        app.include_router(module.router)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several workers: each builds its own app)."""
    settings = load()
    configure_logging(settings.log_level)
    return create_app(settings)

"""The miner's HTTP server: ``create_app(settings)`` builds it, the lifespan wires it.

::

    POST /v1/chat/completions  signed; MinerChatRequest → chat.completion(.chunk)s
    POST /web_retrieval        signed; MinerWebRetrievalRequest → [{"url", "content", "relevant"}]
    GET  /availability         signed; which tasks and models this miner serves
    POST /session              signed; a btsession/1 handshake (docs/sessions.md)
    GET  /session              signed; how many requests were checked by signature and by session MAC
    GET  /health               unsigned; liveness and the miner's hotkey

At start the lifespan loads the hotkey once, opens the chain, advertises the
miner's address (``MINER_SERVE_ON_START``), reads the metagraph and keeps
refreshing it, and opens the nonce store that replay protection shares across
workers. Everything lives on ``app.state``; nothing is global.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager
from typing import AsyncIterator

import aiohttp
from fastapi import Depends, FastAPI, Request
from loguru import logger
from starlette.types import Receive, Scope, Send

from shared.auth import Caller
from shared.chain import open_chain
from shared.chain.cache import MetagraphCache
from shared.epistula import AnyProtocolVerifier
from shared.heap import settle_heap
from shared.http_pool import HttpPool
from shared.nonce_store import open_nonce_store
from shared.schemas import TASKS, WEB_RETRIEVAL_TASK, Availability
from shared.sessions import PATH as SESSION_PATH
from shared.sessions import SessionTable
from shared.settings import configure_logging
from shared.wallet import load_hotkey

from .access import FORBIDDEN, caller_policy, verified_caller
from .backends import open_backend
from .backends.upstream import CONNECT_SECONDS, READ_SECONDS
from .behaviours import Behaviour
from .chat import PATH as CHAT_PATH
from .chat import ChatCompletions
from .errors import install_error_handlers
from .retrieval import router as retrieval_router
from .settings import MinerSettings, load_miner_settings

UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_SECONDS, sock_read=READ_SECONDS)


async def advertise(app: FastAPI) -> None:
    """Put this miner's ip:port on the metagraph; a failure is logged, not fatal."""
    settings = app.state.settings
    if settings.external_ip in ("0.0.0.0", "::", ""):
        logger.error("not advertising {}: set MINER_EXTERNAL_IP to an address validators can reach",
                     settings.external_ip)
        return
    try:
        await app.state.chain.serve(settings.external_ip, settings.miner_port)
        logger.info("serving {}:{} on the metagraph", settings.external_ip, settings.miner_port)
    except Exception as exc:
        logger.error("could not advertise {}:{} on the chain: {}", settings.external_ip, settings.miner_port, exc)


class MinerApp(FastAPI):
    """FastAPI, except that ``POST /v1/chat/completions`` goes straight to its ASGI endpoint.

    That request is nearly all of a miner's traffic; routing it through
    FastAPI's middleware, router and dependency injection cost about a third
    of its CPU. Every other request (and any other method on that path, which
    gets a 405) is routed as usual.
    """

    chat: ChatCompletions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == CHAT_PATH:
            await self.chat(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: MinerSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keypair = load_hotkey(settings.wallet_name, settings.wallet_hotkey, settings.wallet_path)
        hotkey = keypair.ss58_address
        chain = open_chain(
            settings.chain,
            hotkey=hotkey,
            subnet_file=settings.subnet_file,
            network=settings.network,
            netuid=settings.netuid,
            keypair=keypair,
        )
        nonces = open_nonce_store(
            redis_url=settings.redis_url,
            sqlite_path=f"{settings.data_dir}/miner-nonces-{hotkey}.sqlite",
            namespace=hotkey,
        )
        session = aiohttp.ClientSession(timeout=UPSTREAM_TIMEOUT) if settings.miner_backend == "upstream" else None
        pool = HttpPool() if settings.miner_backend == "upstream" else None
        metagraph = MetagraphCache(chain, settings.metagraph_refresh_seconds)

        app.state.settings = settings
        app.state.hotkey = hotkey
        app.state.chain = chain
        app.state.metagraph = metagraph
        app.state.verifier = AnyProtocolVerifier(  # btauth/1 or Epistula, as each request is signed, or a session
            hotkey, nonces, caller_policy(settings, metagraph), why_forbidden=FORBIDDEN,
            max_body_bytes=settings.signed_body_max_bytes,
            sessions=SessionTable(hotkey) if settings.sessions_offered else None,
        )
        app.state.backend = open_backend(settings, session, pool=pool, copies=settings.miner_behaviour == "copycat")
        app.state.behaviour = Behaviour(settings.miner_behaviour, settings.miner_chunk_delay)
        app.state.web_index = None
        if WEB_RETRIEVAL_TASK in settings.tasks:
            from .web_index import WebIndex  # numpy: only for miners that serve web retrieval

            app.state.web_index = WebIndex(settings.miner_web_base_url)

        if settings.miner_offer_sessions and not settings.sessions_offered:
            logger.info("btsession/1 not offered: MINER_WORKERS={} (sessions live in one process's memory); "
                        "callers sign every request", settings.miner_workers)
        if settings.miner_serve_on_start:
            await advertise(app)
        await metagraph.refresh()
        refresher = asyncio.create_task(metagraph.run(), name="metagraph-refresh")
        logger.info(
            "miner {} on {}:{} (backend={}, behaviour={}, models={}, chain={})",
            hotkey, settings.miner_host, settings.miner_port, settings.miner_backend,
            settings.miner_behaviour, ",".join(settings.models), settings.chain,
        )
        # What start-up built (bittensor, FastAPI, the backend's tables) lives forever: keep it out of collections.
        # Without this, a full collection walked all of it: 40–80 ms with nothing answered, every few seconds
        # under load (the longest pauses at c=32 through the chain). Young collections rarer too (shared.heap).
        settle_heap()
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await app.state.backend.close()
            if session is not None:
                await session.close()
            if pool is not None:
                await pool.close()
            await chain.close()
            nonces.close()

    app = MinerApp(title="Reference miner", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    app.chat = ChatCompletions(app)
    app.add_route(CHAT_PATH, app.chat, methods=["POST"])
    app.include_router(retrieval_router)

    @app.get("/availability")
    async def availability(request: Request, caller: Caller = Depends(verified_caller)) -> Availability:
        served = request.app.state.settings
        return Availability(
            task_availabilities={task: task in served.tasks for task in TASKS},
            llm_model_availabilities={model: True for model in served.models},
        )

    @app.post(SESSION_PATH)
    async def session(request: Request) -> dict:
        """A session handshake (docs/sessions.md): signed, with the caller's X25519 public key."""
        return await request.app.state.verifier.handshake(request)

    @app.get(SESSION_PATH)
    async def session_counts(request: Request, caller: Caller = Depends(verified_caller)) -> dict:
        """How this process authenticated its requests since it started (signed: sr25519; session: HMAC)."""
        return request.app.state.verifier.counts()

    @app.get("/health")
    async def health(request: Request) -> dict[str, str]:
        return {"status": "ok", "hotkey": request.app.state.hotkey}

    return app


def create_app_from_env() -> FastAPI:
    """The factory uvicorn's workers import (``miner.app:create_app_from_env``)."""
    settings = load_miner_settings()
    configure_logging(settings.log_level)
    return create_app(settings)

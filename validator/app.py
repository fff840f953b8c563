"""The validator's internal HTTP server and the loops it runs.

Only hotkeys on the allow-list (default: the validator's own, which its API
workers sign with) may call it; every route but ``/health`` is signed::

    GET  /directory        → shared.schemas.Directory: who is where, what they serve
    POST /scoring          ← shared.schemas.ScoringBatch from API workers
    GET  /scoring/stats    → counts per uid, queue depth, drops
    GET  /scoring/pending  → the items waiting to be scored
    GET  /scoring/items/{request_id} → one item, scored or not, while it is kept
    GET  /scores           → every uid's moving-average score, and the last weight set
    GET  /health           → liveness and what the validator knows
    GET  /health/liveness, /health/readiness, /metrics  → probes and Prometheus (unsigned; see probes, metrics)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from contextlib import asynccontextmanager
from typing import AsyncIterator, Optional

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from loguru import logger
from pydantic import ValidationError

from shared.auth import Caller, RequestVerifier, Signer
from shared.chain import SubnetState, open_chain
from shared.chain.cache import MetagraphCache
from shared.epistula import signer_for
from shared.http_metrics import MetricsMiddleware
from shared.nonce_store import open_nonce_store
from shared.schemas import Directory, ScoringBatch
from shared.signed_http import SignedClient
from shared.wallet import load_hotkey
from shared.web_check import PageFetcher

from . import metrics, probes
from .availability import AvailabilityPoller
from .database import Database
from .directory import build_directory
from .organic import OrganicEvidence
from .scorer import Scorer
from .scores import ScoreBook
from .scoring_queue import ScoringQueue
from .settings import ValidatorSettings, parse_mix
from .synthetic import SyntheticLoop
from .web_retrieval_reward import WebJudge
from .weights import WeightSetter


async def availability_loop(app: FastAPI) -> None:
    state = app.state
    while True:
        if state.metagraph.state is not None:
            answered = await state.poller.poll_all(state.metagraph.state, state.signer.hotkey)
            gate_scores_by_coverage(state.book, state.poller, state.metagraph.state)
            logger.debug("availability: {} miners answered", answered)
        await asyncio.sleep(state.settings.availability_poll_seconds)


def gate_scores_by_coverage(book: ScoreBook, poller: AvailabilityPoller, subnet: SubnetState) -> None:
    """Tell the score book what each miner advertises, against what the subnet's miners offer at all."""
    served: dict = {}
    for neuron in subnet.neurons:
        record = poller.get(neuron)
        if record is not None and record.availability is not None:
            served[neuron] = {t for t, on in record.availability.task_availabilities.items() if on}
    offered = set().union(*served.values()) if served else set()
    for neuron, tasks in served.items():
        book.set_coverage(neuron.uid, neuron.hotkey, tasks, offered)


def create_app(settings: ValidatorSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keypair = load_hotkey(settings.wallet_name, settings.wallet_hotkey, settings.wallet_path)
        signer = Signer(keypair)
        chain = open_chain(
            settings.chain,
            hotkey=signer.hotkey,
            subnet_file=settings.subnet_file,
            network=settings.network,
            netuid=settings.netuid,
            keypair=keypair,
        )
        allowed = settings.allowed_hotkeys(signer.hotkey)
        nonces = open_nonce_store(
            redis_url=settings.redis_url,
            sqlite_path=f"{settings.data_dir}/validator-nonces.sqlite",
            namespace=signer.hotkey,
        )
        client = SignedClient(signer_for(settings.miner_protocol, keypair))  # its calls all go to miners
        app.state.settings = settings
        app.state.signer = signer
        app.state.chain = chain
        app.state.verifier = RequestVerifier(
            signer.hotkey, nonces, allowed.__contains__, why_forbidden="hotkey is not on the validator's allow-list",
            max_body_bytes=settings.signed_body_max_bytes,
        )
        app.state.metagraph = MetagraphCache(chain, settings.metagraph_sync_seconds)
        app.state.poller = AvailabilityPoller(client, settings.availability_timeout)
        database = Database(settings.database_path)
        app.state.queue = ScoringQueue(database, settings.scoring_queue_max)
        app.state.book = ScoreBook(database, settings.score_alpha, settings.task_weights(),
                                   min_coverage=settings.min_task_coverage)
        web = WebJudge(PageFetcher(timeout=settings.web_fetch_timeout, max_bytes=settings.web_fetch_max_bytes,
                                   allow_private=settings.web_fetch_allow_private),
                       allowed_hosts=settings.allowed_web_hosts, max_per_host=settings.web_max_results_per_host)
        reference = settings.reference_model()
        organic = OrganicEvidence(database, bound=settings.organic_bound, alpha=settings.organic_alpha,
                                  per_key_cap=settings.organic_per_key_cap,
                                  per_miner_cap=settings.organic_per_miner_cap, window=settings.organic_window_seconds)
        poller = app.state.poller

        def advertises(uid: int, task: str, model: Optional[str]) -> bool:
            record = poller.records.get(uid)
            return record is not None and record.availability is not None and record.availability.serves(task, model)

        scorer = Scorer(database, app.state.queue, app.state.book, rules=settings.rules(), web=web,
                        reference=reference, organic=organic, advertises=advertises)
        synthetic = SyntheticLoop(client, app.state.poller, mix=parse_mix(settings.task_mix),
                                  sample_size=settings.synthetic_sample_size, timeout=settings.synthetic_timeout,
                                  interval=settings.synthetic_interval_seconds,
                                  verifiable_models=reference.models if reference else frozenset())
        app.state.weights = WeightSetter(chain, app.state.book, settings.weights_interval_seconds)
        app.state.synthetic = synthetic
        app.state.metrics = metrics.ValidatorMetrics()
        logger.info("validator {} on {}:{} (chain={})", signer.hotkey, settings.validator_host,
                    settings.validator_port, settings.chain)
        await app.state.metagraph.refresh()
        tasks = [
            asyncio.create_task(app.state.metagraph.run(), name="metagraph"),
            asyncio.create_task(availability_loop(app), name="availability"),
            asyncio.create_task(synthetic.run(app.state.metagraph, signer.hotkey, app.state.queue), name="synthetic"),
            asyncio.create_task(scorer.run(app.state.metagraph), name="scorer"),
            asyncio.create_task(app.state.weights.run(), name="weights"),
        ]
        gc.freeze()  # what start-up built (bittensor, FastAPI, the corpus) lives forever: keep it out of collections
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await client.close()
            await chain.close()
            database.close()

    app = FastAPI(title="validator (internal)", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(MetricsMiddleware)
    app.include_router(probes.router)
    if settings.metrics_enabled:
        app.include_router(metrics.router)

    async def signed(request: Request) -> Caller:
        return await request.app.state.verifier(request)

    @app.get("/health")
    async def health(request: Request) -> dict:
        state = request.app.state
        graph = state.metagraph.state
        return {
            "status": "ok",
            "hotkey": state.signer.hotkey,
            "block": graph.block if graph else None,
            "neurons": len(graph.neurons) if graph else 0,
            "available_miners": sum(1 for r in state.poller.records.values() if r.availability is not None),
        }

    @app.get("/directory", response_model=Directory)
    async def directory(request: Request, caller: Caller = Depends(signed)) -> Directory:
        state = request.app.state
        if state.metagraph.state is None:
            raise HTTPException(503, "the metagraph has not been read yet")
        return build_directory(state.metagraph.state, state.poller, state.signer.hotkey, state.book.table())

    @app.post("/scoring")
    async def scoring(request: Request, caller: Caller = Depends(signed)) -> dict:
        try:
            batch = ScoringBatch.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]["msg"]
            raise HTTPException(422, f"not a scoring batch: {exc.error_count()} errors, first: {first}") from None
        result = await request.app.state.queue.put(batch.items)
        if result.dropped:
            logger.warning("scoring queue full: dropped the {} oldest items", result.dropped)
        return {"accepted": result.accepted, "duplicates": result.duplicates, "dropped": result.dropped}

    @app.get("/scoring/stats")
    async def scoring_stats(request: Request, caller: Caller = Depends(signed)) -> dict:
        return await request.app.state.queue.stats()

    @app.get("/scores")
    async def scores(request: Request, caller: Caller = Depends(signed)) -> dict:
        state = request.app.state
        weights = state.book.weights()
        rows = state.book.table()
        for row in rows:
            row["weight"] = round(weights.get(row["uid"], 0.0), 6)
        return {"scores": rows, "last_weight_set": state.weights.last, "weight_steps": state.weights.steps}

    @app.get("/scoring/items/{request_id}")
    async def scoring_item(request_id: str, request: Request, caller: Caller = Depends(signed)) -> dict:
        found = await asyncio.to_thread(request.app.state.queue.find, request_id)
        if found is None:
            raise HTTPException(404, "no such item (never received, or pruned)")
        scored, item = found
        return {"scored": scored, **item.model_dump()}

    @app.get("/scoring/pending")
    async def scoring_pending(
        request: Request, limit: int = Query(100, ge=1, le=1000), caller: Caller = Depends(signed)
    ) -> list[dict]:
        return [item.model_dump() for item in await request.app.state.queue.pending(limit)]

    return app

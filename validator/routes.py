"""The validator's signed routes, as one router (the probes and ``/metrics`` have their own modules).

Every route but ``/health`` is signed by a hotkey on the allow-list (``signed``, a dependency); each
reads what it needs from the typed ``Services`` (``validator.services``)::

    GET  /directory        → shared.schemas.Directory: who is where, what they serve
    POST /scoring          ← shared.schemas.ScoringBatch from API workers
    GET  /scoring/stats    → counts per uid, queue depth, drops
    GET  /scoring/pending  → the items waiting to be scored
    GET  /scoring/items/{request_id} → one item, scored or not, while it is kept
    GET  /scores           → every uid's moving-average score, and the last weight set
    GET  /health           → liveness and what the validator knows
    POST /session          ← a btsession/1 handshake (docs/sessions.md); GET /session: how requests were checked
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from loguru import logger
from pydantic import ValidationError

from shared.auth import Caller
from shared.schemas import Directory, ScoringBatch

from .directory import build_directory
from .services import Services, services_of

router = APIRouter()
Served = Annotated[Services, Depends(services_of)]


async def signed(request: Request) -> Caller:
    return await services_of(request).verifier(request)


@router.get("/health")
async def health(services: Served) -> dict:
    graph = services.metagraph.state
    return {
        "status": "ok",
        "hotkey": services.signer.hotkey,
        "block": graph.block if graph else None,
        "neurons": len(graph.neurons) if graph else 0,
        "available_miners": sum(1 for r in services.poller.records.values() if r.availability is not None),
    }


@router.post("/session")
async def session(request: Request) -> dict:
    """A btsession/1 handshake (docs/sessions.md): signed by an allowed hotkey, with its X25519 public key."""
    return await services_of(request).verifier.handshake(request)


@router.get("/session")
async def session_counts(services: Served, caller: Caller = Depends(signed)) -> dict:
    """How this process checked its requests since it started (signed: sr25519; session: HMAC)."""
    return services.verifier.counts()


@router.get("/directory", response_model=Directory)
async def directory(services: Served, caller: Caller = Depends(signed)) -> Directory:
    if services.metagraph.state is None:
        raise HTTPException(503, "the metagraph has not been read yet")
    return build_directory(services.metagraph.state, services.poller, services.signer.hotkey, services.book.table())


@router.post("/scoring")
async def scoring(request: Request, services: Served, caller: Caller = Depends(signed)) -> dict:
    try:
        batch = ScoringBatch.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]["msg"]
        raise HTTPException(422, f"not a scoring batch: {exc.error_count()} errors, first: {first}") from None
    result = await services.queue.put(batch.items)
    if result.dropped:
        logger.warning("scoring queue full: dropped the {} oldest items", result.dropped)
    return {"accepted": result.accepted, "duplicates": result.duplicates, "dropped": result.dropped}


@router.get("/scoring/stats")
async def scoring_stats(services: Served, caller: Caller = Depends(signed)) -> dict:
    return await services.queue.stats()


@router.get("/scores")
async def scores(services: Served, caller: Caller = Depends(signed)) -> dict:
    weights = services.book.weights()
    rows = services.book.table()
    for row in rows:
        row["weight"] = round(weights.get(row["uid"], 0.0), 6)
    return {"scores": rows, "last_weight_set": services.weights.last, "weight_steps": services.weights.steps}


@router.get("/scoring/items/{request_id}")
async def scoring_item(request_id: str, services: Served, caller: Caller = Depends(signed)) -> dict:
    found = await asyncio.to_thread(services.queue.find, request_id)
    if found is None:
        raise HTTPException(404, "no such item (never received, or pruned)")
    scored, item = found
    return {"scored": scored, **item.model_dump()}


@router.get("/scoring/pending")
async def scoring_pending(
    services: Served, limit: int = Query(100, ge=1, le=1000), caller: Caller = Depends(signed)
) -> list[dict]:
    return [item.model_dump() for item in await services.queue.pending(limit)]

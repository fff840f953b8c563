"""Web retrieval for clients: ask several miners for pages, keep only what holds up.

    query = WebRetrievalQuery(search_query="Why do leaves look green?", n_results=2)
    answer = await retrieve(gateway, query)       # {"results": [...], "miners": [...]}

``n_miners`` miners available for ``WebRetrievalTask`` (or exactly ``uids``)
are asked at once, each given what is left of ``max_response_time``; one that
fails early is replaced by the next candidate while time remains. Every answer
is forwarded to the validator for scoring. The client gets at most
``n_results`` results, best first by relevance to the query, after these
rules:

- malformed results are dropped (``shared.web_check.parse_result``: string
  fields, an http(s) URL, ``relevant`` part of ``content``);
- with ``WEB_RETRIEVAL_VERIFY`` (the default), results whose ``content`` is not
  on the page their URL names are dropped: the API fetches each distinct URL
  once, bounded in time and size;
- one result per URL (the first that passed, from the fastest miner);
- only a miner's first ``n_results`` results count (what it was asked for).
"""

from __future__ import annotations

import asyncio
import time
from itertools import zip_longest
from typing import TYPE_CHECKING, Any, Optional

from pydantic import BaseModel, Field, field_validator

from shared.corpus import relevance
from shared.request_ids import new_id
from shared.schemas import (
    WEB_RETRIEVAL_TASK,
    MinerRecord,
    MinerResponse,
    MinerWebRetrievalRequest,
    WebResult,
)
from shared.web_check import content_on_page, parse_result, url_key
from shared.web_retrieval import as_chat_request, web_query

from .errors import ApiError
from .fanout import FanOut
from .forwarder import organic_item
from .meter import Meter
from .selection import current_directory, select_candidates

if TYPE_CHECKING:
    from .gateway import Gateway


class WebRetrievalQuery(BaseModel):
    """The subnet's web retrieval fields, as JSON (POST) or query parameters (GET)."""

    search_query: str = Field(min_length=1, max_length=2000)
    n_miners: int = Field(3, ge=1, le=32)
    n_results: int = Field(1, ge=1, le=20)
    max_response_time: float = Field(10.0, gt=0, le=120)
    uids: Optional[list[int]] = Field(None, min_length=1, max_length=64)

    @field_validator("search_query")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("search_query is blank")
        return value.strip()

    @field_validator("uids", mode="before")
    @classmethod
    def comma_separated(cls, value: Any) -> Any:
        """``?uids=1,2`` as well as ``?uids=1&uids=2``."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and any(isinstance(v, str) for v in value):
            return [part.strip() for v in value for part in str(v).split(",") if part.strip()]
        return value

    @field_validator("uids")
    @classmethod
    def distinct(cls, uids: Optional[list[int]]) -> Optional[list[int]]:
        if uids is not None and len(set(uids)) != len(uids):
            raise ValueError("uids must be distinct")
        return uids


async def ask_miners(gateway: Gateway, candidates: list[MinerRecord], width: int, request: MinerWebRetrievalRequest,
                     seconds: float) -> list[MinerResponse]:
    """``width`` miners at once; a failure is replaced while time and attempts remain (``api.fanout``)."""
    deadline = time.monotonic() + seconds

    def start(miner: MinerRecord) -> asyncio.Task:
        return asyncio.create_task(web_query(gateway.client, miner.uid, miner.hotkey, miner.address, request,
                                             timeout=max(0.05, deadline - time.monotonic())))

    fan = FanOut(candidates, start=start, signal=lambda task: task, width=width,
                 max_attempts=gateway.settings.max_attempts, started=[], deadline=deadline, margin=0.1)
    responses: list[MinerResponse] = []
    fan.start()
    while fan.running:
        for task in await fan.settled():
            responses.append(task.result())
            if responses[-1].status != "ok":
                fan.replace()
    return responses


def forward(gateway: Gateway, request_id: str, request: MinerWebRetrievalRequest,
            responses: list[MinerResponse]) -> None:
    if gateway.forwarder.wants([response.uid for response in responses], None):
        gateway.forwarder.submit(organic_item(request_id, as_chat_request(request), responses,
                                              task=WEB_RETRIEVAL_TASK, search_query=request.search_query,
                                              n_results=request.n_results))


async def what_holds_up(gateway: Gateway, answered: list[MinerResponse], n_results: int) -> list[tuple[int, WebResult]]:
    """(uid, result) for every result that passes the rules above, one per URL, fastest miner first."""
    # Each miner's first n_results well-formed results, taken in turns (fastest miner first in each turn),
    # so one miner's long list cannot crowd the others out of the bounded page fetches.
    per_miner = [[(r.uid, parsed) for parsed in map(parse_result, (r.results or [])[:n_results]) if parsed]
                 for r in answered]
    found = [pair for turn in zip_longest(*per_miner) for pair in turn if pair is not None]
    pages = None
    if gateway.settings.web_retrieval_verify and found:
        pages = await gateway.pages.fetch_many([result.url for _, result in found], session=gateway.http)
    kept: dict[str, tuple[int, WebResult]] = {}
    for uid, result in found:
        key = url_key(result.url)
        if key not in kept and (pages is None or content_on_page(result.content, pages.get(result.url))):
            kept[key] = (uid, result)
    return list(kept.values())


async def retrieve(gateway: Gateway, query: WebRetrievalQuery, meter: Optional[Meter] = None) -> dict:
    """The answer, under an id that is also the request log's (with ``meter``: its X-Request-Id, and every
    miner asked logged)."""
    directory = current_directory(gateway)
    settings = gateway.settings
    candidates, width = select_candidates(directory, task=WEB_RETRIEVAL_TASK, model=None, uids=query.uids,
                                          top_n=None, top_pool=settings.top_pool, rng=gateway.rng)
    request = MinerWebRetrievalRequest(search_query=query.search_query, n_results=query.n_results)
    request_id = new_id("webret")
    if meter is not None:
        meter.request_id = request_id
        meter.headers = [*meter.headers, (b"x-request-id", request_id.encode())]
    responses = await ask_miners(gateway, candidates, width or query.n_miners, request, query.max_response_time)
    if meter is not None:
        meter.queried(responses)
    if responses:
        forward(gateway, request_id, request, responses)
    answered = sorted((r for r in responses if r.status == "ok"), key=lambda r: r.timings[0] if r.timings else 0)
    if not answered:
        failures = "; ".join(f"uid {r.uid}: {r.error}" for r in responses)[:600]
        raise ApiError(502, f"no miner could answer: {failures}", "miners_failed")

    kept = await what_holds_up(gateway, answered, query.n_results)
    ranked = sorted(kept, key=lambda pair: -relevance(pair[1].relevant, query.search_query))
    accepted = {r.uid: 0 for r in responses}
    for uid, _ in kept:
        accepted[uid] += 1
    if meter is not None:
        shown = {uid for uid, _ in ranked[: query.n_results]}
        for response in responses:
            if response.uid in shown:
                meter.contributed(response)
    return {
        "id": request_id,
        "results": [{**result.model_dump(), "miner_uid": uid} for uid, result in ranked[: query.n_results]],
        "miners": [{"uid": r.uid, "hotkey": r.hotkey, "status": r.status, "returned": len(r.results or []),
                    "accepted": accepted[r.uid], **({"error": r.error} if r.error else {})} for r in responses],
    }

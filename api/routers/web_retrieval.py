"""``GET|POST /web_retrieval``: pages from miners, checked before the client sees them.

The same fields either way (``search_query``, ``n_miners``, ``n_results``,
``max_response_time``, ``uids``): as query parameters for GET (``uids`` repeated
or comma-separated), as a JSON body for POST, or as both (older scripts: query
parameters, and ``target_uids`` in the body; see ``api.compat.subnet_web``). The answer is the subnet's
``{"results": [{"url", "content", "relevant"}]}``, each result also naming its
``miner_uid``, plus ``id`` (under which the answers went to the validator) and
``miners``: what each queried miner did. See
``api.web_retrieval`` for the rules.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from fastapi import APIRouter, Body, Depends, Query, Request

from ..access import admit
from ..admission import admit_units, retrieval_units
from ..compat.subnet_web import merged_query
from ..gateway import gateway_of
from ..keys import KeyRecord
from ..meter import meter_of
from ..moderation import screen
from ..web_retrieval import WebRetrievalQuery, retrieve

router = APIRouter(tags=["web retrieval"])


async def answer(request: Request, query: WebRetrievalQuery, key: KeyRecord) -> dict:
    """Screen, admit one unit per miner asked, retrieve, and keep the request's credits only when miners
    found something."""
    await screen(gateway_of(request).moderator, [query.search_query])
    meter = meter_of(request)
    await admit_units(gateway_of(request), meter, key, retrieval_units(query))
    meter.describe(task="WebRetrievalTask", strategy="uids" if query.uids else "sample", model=None, stream=False,
                   prompt_tokens=len(query.search_query.split()))
    result = await retrieve(gateway_of(request), query, meter)
    if result.get("results"):
        meter.answered()  # miners found something: the request keeps its credits
    return result


@router.get("/web_retrieval")
async def web_retrieval_get(request: Request, query: Annotated[WebRetrievalQuery, Query()],
                            key: KeyRecord = Depends(admit)) -> dict:
    return await answer(request, query, key)


@router.post("/web_retrieval")
async def web_retrieval_post(request: Request, body: Annotated[Optional[Any], Body()] = None,
                             key: KeyRecord = Depends(admit)) -> dict:
    """A JSON body (``WebRetrievalQuery``), query parameters, or both; ``target_uids`` as ``uids``."""
    return await answer(request, merged_query(request.query_params, body), key)

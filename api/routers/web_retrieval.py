"""``GET|POST /web_retrieval``: pages from miners, checked before the client sees them.

The same fields either way (``search_query``, ``n_miners``, ``n_results``,
``max_response_time``, ``uids``): as query parameters for GET (``uids`` repeated
or comma-separated), as a JSON body for POST. The answer is the subnet's
``{"results": [{"url", "content", "relevant"}]}``, each result also naming its
``miner_uid``, plus ``id`` (under which the answers went to the validator) and
``miners``: what each queried miner did. See
``api.web_retrieval`` for the rules.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from ..auth import require_api_key
from ..keys import KeyRecord
from ..moderation import screen
from ..web_retrieval import WebRetrievalQuery, retrieve

router = APIRouter(tags=["web retrieval"])


@router.get("/web_retrieval")
async def web_retrieval_get(request: Request, query: Annotated[WebRetrievalQuery, Query()],
                            key: KeyRecord = Depends(require_api_key)) -> dict:
    await screen(request, [query.search_query])
    return await retrieve(request.app.state, query)


@router.post("/web_retrieval")
async def web_retrieval_post(query: WebRetrievalQuery, request: Request,
                             key: KeyRecord = Depends(require_api_key)) -> dict:
    await screen(request, [query.search_query])
    return await retrieve(request.app.state, query)

"""``POST /web_retrieval``: a signed ``MinerWebRetrievalRequest`` in, a JSON list of results out.

::

    → {"search_query": "Why do leaves look green?", "n_results": 2}
    ← [{"url": "http://…/pages/14-photosynthesis.html", "content": "…", "relevant": "…"}, …]

The results come from the miner's web index (``miner.web_index``), shaped by
its demo behaviour. A chat request with ``task: "WebRetrievalTask"`` (how the
subnet's older clients ask) gets the same list as the text of one chunk;
``n_results`` then travels in the chat body.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from shared.auth import Caller
from shared.schemas import WEB_RETRIEVAL_TASK, MinerChatRequest, MinerWebRetrievalRequest

from .access import verified_caller
from .backends.base import ChoiceStream, Outcome, all_at_once
from .backends.builtin import message_text
from .errors import MinerError, describe_validation_errors

router = APIRouter()


def served_index(state: Any):
    index = state.web_index
    if index is None:
        raise MinerError(400, f"this miner does not serve task {WEB_RETRIEVAL_TASK!r}", code="task_not_served")
    return index


@router.post("/web_retrieval")
async def web_retrieval(request: Request, caller: Caller = Depends(verified_caller)) -> JSONResponse:
    try:
        body = MinerWebRetrievalRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise MinerError(422, describe_validation_errors(exc.errors())) from None
    index = served_index(request.app.state)
    return JSONResponse(await request.app.state.behaviour.web_results(index, body.search_query, body.n_results))


async def chat_results(state: Any, body: MinerChatRequest) -> list[ChoiceStream]:
    """The web retrieval answer as chat choices: the JSON list, in one piece per choice."""
    index = served_index(state)
    query = next((message_text(m.content) for m in reversed(body.messages) if m.role == "user"), "")
    if not query.strip():
        raise MinerError(400, "web retrieval needs a user message to search for", code="empty_query")
    n_results = (body.model_extra or {}).get("n_results", 1)
    if not isinstance(n_results, int) or not 1 <= n_results <= 20:
        raise MinerError(422, "n_results must be an integer from 1 to 20")
    text = json.dumps(await state.behaviour.web_results(index, query, n_results))
    return [ChoiceStream(all_at_once([text]), Outcome("stop", 0, 1)) for _ in range(body.n)]

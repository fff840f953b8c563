"""Ask one miner for web pages: the API (for clients) and the validator (synthetic rounds) alike.

    request = MinerWebRetrievalRequest(search_query="Why do leaves look green?", n_results=2)
    response = await web_query(client, uid, hotkey, address, request, timeout=10.0)   # MinerResponse

The miner gets a signed ``POST /web_retrieval``; its answer (a JSON list,
kept as it came, malformed entries included, at most ``MAX_RESULTS_KEPT``)
becomes a ``MinerResponse`` whose ``results`` the API filters and the
validator's scorer checks against the pages themselves. A failure is a
response with status ``error`` or ``timeout``, never an exception.
"""

from __future__ import annotations

import asyncio
import json
import time

from .schemas import WEB_RETRIEVAL_TASK, ChatMessage, MinerChatRequest, MinerResponse, MinerWebRetrievalRequest
from .signed_http import SignedCallError, SignedClient

MAX_RESULTS_KEPT = 50
MAX_ANSWER_BYTES = 2_000_000


def as_chat_request(request: MinerWebRetrievalRequest) -> MinerChatRequest:
    """How a web retrieval item carries its query in the scoring queue (its ``request`` field)."""
    return MinerChatRequest(messages=[ChatMessage(role="user", content=request.search_query)],
                            task=WEB_RETRIEVAL_TASK, n_results=request.n_results)


async def web_query(client: SignedClient, uid: int, hotkey: str, address: str, request: MinerWebRetrievalRequest,
                    timeout: float) -> MinerResponse:
    started = time.monotonic()
    body = json.dumps(request.model_dump()).encode()
    try:
        answer = await client.request_json("POST", address, "/web_retrieval", receiver=hotkey, body=body,
                                           timeout=timeout, max_bytes=MAX_ANSWER_BYTES)
    except SignedCallError as exc:
        status = "timeout" if "Timeout" in str(exc) else "error"
        return MinerResponse(uid=uid, hotkey=hotkey, status=status, error=str(exc)[:300])
    except (ValueError, asyncio.TimeoutError) as exc:
        return MinerResponse(uid=uid, hotkey=hotkey, status="error", error=f"unreadable answer: {exc}"[:300])
    elapsed = time.monotonic() - started
    if not isinstance(answer, list):
        return MinerResponse(uid=uid, hotkey=hotkey, status="error", error="the answer is not a JSON list",
                             timings=[elapsed])
    return MinerResponse(uid=uid, hotkey=hotkey, status="ok", results=answer[:MAX_RESULTS_KEPT], timings=[elapsed])

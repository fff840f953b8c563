"""Synthetic web retrieval: ask miners to find pages for a question the validator knows.

    request = web_retrieval_request(rng, corpus)          # a question from the corpus, 1–3 results
    response = await web_query(client, uid, hotkey, address, request, timeout)

The miner gets a signed ``POST /web_retrieval``; its answer (a JSON list,
kept as it came, malformed entries included) becomes a ``MinerResponse`` whose
``results`` the scorer checks against the pages themselves.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

from shared.corpus import Corpus
from shared.schemas import WEB_RETRIEVAL_TASK, ChatMessage, MinerChatRequest, MinerResponse, MinerWebRetrievalRequest
from shared.signed_http import SignedCallError, SignedClient

MAX_RESULTS_KEPT = 50


def web_retrieval_request(rng: random.Random, corpus: Corpus) -> MinerWebRetrievalRequest:
    question = rng.choice(rng.choice(corpus.passages).questions)
    return MinerWebRetrievalRequest(search_query=question, n_results=rng.randint(1, 3))


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
                                           timeout=timeout, max_bytes=2_000_000)
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

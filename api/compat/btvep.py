"""btvep's ``POST /chat`` (Bittensor Validator Endpoint), over the chat core.

    curl $URL/chat -H "Authorization: Bearer $KEY" -H "Endpoint-Version: 2023-05-19" \\
         -d '{"messages": [{"role": "user", "content": "Say this is a test!"}]}'

The answer is a ``chat.completion`` whose choices also carry btvep's
``responder_hotkey``, ``uid`` and ``response_ms``, plus btvep's first shape,
a top-level ``message`` (its docs read ``response.json()["message"]["content"]``),
and ``failed_responses``: the miners that failed before the answer was chosen.
Every chat field applies (``uids``, ``top_n``, ``task``, ``model``…);
``Endpoint-Version`` is optional, and any version but ``2023-05-19`` is a 400.
A streamed request gets the chat route's stream unchanged.
"""

from __future__ import annotations

import time
from typing import Optional

from fastapi import APIRouter, Depends, Header, Request

from ..access import admit
from ..chat import answer, chat_response
from ..errors import ApiError
from ..gateway import gateway_of
from ..json_response import FastJSONResponse
from ..keys import KeyRecord
from ..meter import meter_of
from ..schemas import ChatCompletionRequest

router = APIRouter(tags=["compatibility"])
ENDPOINT_VERSION = "2023-05-19"


class BtvepChatRequest(ChatCompletionRequest):
    # btvep's own switches: the race here always answers with the first miner to succeed.
    respond_on_first_success: Optional[bool] = None
    in_parallel: Optional[int] = None


def failed_responses(request: Request) -> list[dict]:
    calls = getattr(meter_of(request), "calls", None) or []
    return [{"uid": c.miner.uid, "responder_hotkey": c.miner.hotkey, "error": c.error}
            for c in calls if c.status not in ("ok", "cancelled")]


@router.post("/chat")
async def btvep_chat(body: BtvepChatRequest, request: Request, key: KeyRecord = Depends(admit),
                     endpoint_version: Optional[str] = Header(None)):
    if endpoint_version not in (None, ENDPOINT_VERSION):
        raise ApiError(400, f"unsupported Endpoint-Version {endpoint_version!r}; this gateway speaks"
                            f" {ENDPOINT_VERSION}", "unsupported_endpoint_version")
    started = time.perf_counter()
    outcome = await answer(gateway_of(request), key, body, meter_of(request))
    if outcome.streamed or outcome.kind != "chat":  # a stream, or test-time inference's answer: as the chat route
        return chat_response(outcome, {"Endpoint-Version": ENDPOINT_VERSION})
    completion = dict(outcome.completion)
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    completion["choices"] = [{**choice, "uid": completion.get("miner_uid"),
                              "responder_hotkey": completion.get("responder_hotkey"), "response_ms": elapsed_ms}
                             for choice in completion.get("choices", [])]
    if completion["choices"]:
        completion["message"] = completion["choices"][0]["message"]
    completion["failed_responses"] = failed_responses(request)
    return FastJSONResponse(completion, headers={"X-Request-Id": completion.get("id", ""),
                                                 "Endpoint-Version": ENDPOINT_VERSION})

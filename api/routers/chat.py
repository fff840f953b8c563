"""``POST /v1/chat/completions``: OpenAI-compatible, streamed or not, answered by miners.

The FastAPI route (browser requests when CORS is configured; every other client takes ``api.hot_path``):
admission is the ``admit`` dependency, the answer the chat core's (``api.chat``), rendered as OpenAI does.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..access import admit
from ..chat import answer, chat_response
from ..gateway import gateway_of
from ..keys import KeyRecord
from ..meter import meter_of
from ..schemas import ChatCompletionRequest

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, key: KeyRecord = Depends(admit)):
    return chat_response(await answer(gateway_of(request), key, body, meter_of(request)))

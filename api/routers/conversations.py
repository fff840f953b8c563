"""``/v1/conversations``: conversations the API keeps, so a client sends only the new turn.

- ``POST /v1/conversations`` ``{"messages": [...], "metadata": {...}}`` (both
  optional) → ``{"id": "conv_…", "object": "conversation", "created_at",
  "metadata", "messages"}``.
- ``GET /v1/conversations/{id}`` → the same, with every message so far.
- ``POST /v1/conversations/{id}/chat``: a chat request (every field of
  ``/v1/chat/completions``, streamed or not) whose ``messages`` are the new
  turn. The stored conversation (its last ``CONVERSATION_CONTEXT_MESSAGES``
  messages, and its first system message if that falls outside) goes first.
  When the reply is complete, the new messages and the reply (choice 0) are
  stored; a failed or abandoned reply stores nothing. The answer is the chat
  answer, plus ``conversation_id`` (non-streamed) and an ``X-Conversation-Id``
  header.
- ``DELETE /v1/conversations/{id}`` → ``{"id", "object": "conversation.deleted", "deleted": true}``.

A conversation belongs to the API key that created it; any other key gets 404.
"""

from __future__ import annotations

import json
from contextlib import aclosing
from dataclasses import replace
from typing import Any, AsyncIterator, Optional

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from shared.schemas import ChatMessage

from ..access import Admit, admit, identify
from ..chat import answer, chat_response
from ..chat.events import Delta, Done, Event, Failed
from ..conversations import Conversation
from ..errors import ApiError
from ..gateway import gateway_of
from ..keys import KeyRecord
from ..meter import meter_of
from ..schemas import ChatCompletionRequest

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])
# Creating one stores what the client sent: no credit, but a rate-limit slot and a request log.
admit_storing = Admit(cost=0)


class NewConversation(BaseModel):
    messages: list[ChatMessage] = Field(default_factory=list, max_length=1000)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)


async def owned(request: Request, conversation_id: str, key: KeyRecord) -> Conversation:
    conversation = await gateway_of(request).conversations.get(conversation_id, owner=key.id)
    if conversation is None:
        raise ApiError(404, f"no conversation {conversation_id!r}", "conversation_not_found")
    return conversation


def bounded(messages: list[ChatMessage], limit: int) -> list[ChatMessage]:
    """422 when a message to be stored is longer than ``CONVERSATION_MESSAGE_MAX_CHARS``."""
    for index, message in enumerate(messages):
        content = message.content
        size = len(content) if isinstance(content, str) else len(json.dumps(content, default=str))
        if size > limit:
            raise ApiError(422, f"invalid request: messages.{index}.content: longer than {limit} characters"
                           " (CONVERSATION_MESSAGE_MAX_CHARS)", "message_too_long")
    return messages


def context(stored: list[dict], limit: int) -> list[ChatMessage]:
    """The last ``limit`` stored messages, with the first system message kept if it falls outside."""
    kept = stored[-limit:]
    system = next((m for m in stored if m.get("role") == "system"), None)
    if system is not None and system not in kept:
        kept = [system, *kept[1:]] if len(kept) >= limit else [system, *kept]
    return [ChatMessage.model_validate(m) for m in kept]


@router.post("")
async def create_conversation(request: Request, body: Optional[NewConversation] = Body(None),
                              key: KeyRecord = Depends(admit_storing)) -> dict:
    body = body or NewConversation()
    bounded(body.messages, gateway_of(request).settings.conversation_message_max_chars)
    conversation = await gateway_of(request).conversations.create(
        owner=key.id, messages=[m.model_dump() for m in body.messages], metadata=body.metadata)
    return conversation.public()


@router.get("/{conversation_id}")
async def get_conversation(conversation_id: str, request: Request, key: KeyRecord = Depends(identify)) -> dict:
    return (await owned(request, conversation_id, key)).public()


@router.delete("/{conversation_id}")
async def delete_conversation(conversation_id: str, request: Request,
                              key: KeyRecord = Depends(identify)) -> dict:
    if not await gateway_of(request).conversations.delete(conversation_id, owner=key.id):
        raise ApiError(404, f"no conversation {conversation_id!r}", "conversation_not_found")
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.post("/{conversation_id}/chat")
async def conversation_chat(conversation_id: str, body: ChatCompletionRequest, request: Request,
                            key: KeyRecord = Depends(admit)):
    gateway = gateway_of(request)
    bounded(body.messages, gateway.settings.conversation_message_max_chars)
    conversation = await owned(request, conversation_id, key)
    history = context(conversation.messages, gateway.settings.conversation_context_messages)
    outcome = await answer(gateway, key, body.model_copy(update={"messages": [*history, *body.messages]}),
                           meter_of(request))
    new_messages = [m.model_dump() for m in body.messages]

    async def remember(text: str) -> None:
        await gateway.conversations.append(conversation_id, owner=key.id,
                                           messages=[*new_messages, {"role": "assistant", "content": text}])

    headers = {"X-Conversation-Id": conversation_id}
    if outcome.streamed:
        return chat_response(replace(outcome, events=remembering(outcome.events, remember)), headers)
    completion = outcome.completion
    await remember(first_choice_text(completion))
    return JSONResponse({**completion, "conversation_id": conversation_id},
                        headers={"X-Request-Id": completion.get("id", ""), **headers})


def first_choice_text(completion: dict[str, Any]) -> str:
    for choice in completion.get("choices") or ():
        if choice.get("index", 0) == 0:
            return (choice.get("message") or {}).get("content") or ""
    return ""


async def remembering(events: AsyncIterator[list[Event]], remember) -> AsyncIterator[list[Event]]:
    """The chat stream's events as they are; once it ends cleanly, choice 0's text is stored (before the
    end leaves)."""
    parts: list[str] = []
    failed = False
    async with aclosing(events):
        async for batch in events:
            for event in batch:
                if isinstance(event, Delta):
                    parts.append(event.text(0))
                elif isinstance(event, Failed):
                    failed = True
                elif isinstance(event, Done) and not failed:
                    await remember("".join(parts))
            yield batch

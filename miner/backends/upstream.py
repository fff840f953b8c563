"""Forward each choice to an OpenAI-compatible server (vLLM, llama.cpp server, Ollama…).

This is what a real miner runs::

    session = aiohttp.ClientSession()                 # one per process, opened in the lifespan
    backend = UpstreamBackend(session, "http://127.0.0.1:8000/v1", api_key="", model="")
    stream = backend.open(request, "Qwen/Qwen2.5-7B-Instruct", index=0)

Each choice is one streamed upstream request with ``seed + index``; the
subnet's ``sampling_parameters`` become ``temperature``, ``top_p``,
``max_tokens`` and ``seed``. Anything that goes wrong upstream (refused
connection, a 4xx/5xx, an ``error`` event, a timeout) becomes a 502
:class:`~miner.errors.MinerError` with a message that is safe to pass on.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import aiohttp

from ..errors import MinerError
from .base import ChoiceStream, Outcome
from .builtin import count_tokens, prompt_tokens


def upstream_payload(request: Any, model: str, index: int) -> dict[str, Any]:
    """The OpenAI request body for choice ``index`` of a miner request."""
    sampling = request.sampling_parameters
    return {
        "model": model,
        "messages": [message.model_dump(exclude_none=True) for message in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "seed": request.seed + index,
    }


async def sse_data(lines: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined with newlines)."""
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


def upstream_error_message(status: int, text: str) -> str:
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text.strip()
    return f"upstream answered {status}: {str(message)[:300]}"


class UpstreamBackend:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, *, api_key: str = "", model: str = ""):
        self.session = session
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model

    def open(self, request: Any, model: str, index: int) -> ChoiceStream:
        outcome = Outcome(prompt_tokens=prompt_tokens([m.model_dump() for m in request.messages]))
        payload = upstream_payload(request, self.model or model, index)
        return ChoiceStream(self._pieces(payload, outcome), outcome)

    async def close(self) -> None:
        return None  # the session belongs to the app's lifespan

    async def _pieces(self, payload: dict[str, Any], outcome: Outcome) -> AsyncIterator[str]:
        text: list[str] = []
        reported_usage = False
        try:
            async with self.session.post(self.url, json=payload, headers=self.headers) as response:
                if response.status != 200:
                    raise MinerError(502, upstream_error_message(response.status, await response.text()))
                if response.content_type == "application/json":  # a server that ignores "stream"
                    events = [await response.text()]
                else:
                    events = sse_data(response.content)
                async for data in _as_async(events):
                    if data.strip() == "[DONE]":
                        break
                    event = json.loads(data)
                    if event.get("error"):
                        raise MinerError(502, upstream_error_message(502, json.dumps(event)))
                    usage = event.get("usage")
                    if usage:
                        reported_usage = True
                        outcome.prompt_tokens = int(usage.get("prompt_tokens", outcome.prompt_tokens))
                        outcome.completion_tokens = int(usage.get("completion_tokens", 0))
                    for choice in event.get("choices") or []:
                        part = choice.get("delta") or choice.get("message") or {}
                        content = part.get("content")
                        if choice.get("finish_reason"):
                            outcome.finish_reason = choice["finish_reason"]
                        if content:
                            text.append(content)
                            yield content
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise MinerError(502, f"upstream unreachable: {type(exc).__name__}: {exc}"[:300]) from None
        except ValueError as exc:
            raise MinerError(502, f"upstream sent an unreadable event: {exc}"[:300]) from None
        if not reported_usage:
            outcome.completion_tokens = count_tokens("".join(text))


async def _as_async(events: Any) -> AsyncIterator[str]:
    if isinstance(events, list):
        for event in events:
            yield event
    else:
        async for event in events:
            yield event

"""Forward each choice to an OpenAI-compatible server (vLLM, llama.cpp server, Ollama…).

This is what a real miner runs::

    session = aiohttp.ClientSession()                 # one per process, opened in the lifespan
    backend = UpstreamBackend(session, "http://127.0.0.1:8000/v1", api_key="", model="", pool=HttpPool())
    stream = backend.open(request, "Qwen/Qwen2.5-7B-Instruct", index=0)

A plain ``http://`` upstream (vLLM or llama.cpp beside the miner, the usual
case) goes through ``shared.http_pool``, which costs a fraction of aiohttp's
CPU per call (see its docstring); ``https://`` upstreams go through aiohttp.

Each choice is one upstream request with ``seed + index``, streamed when the
caller asked for a stream; the subnet's ``sampling_parameters`` become
``temperature``, ``top_p``, ``max_tokens`` and ``seed``. Anything that goes wrong upstream (refused
connection, a 4xx/5xx, an ``error`` event, a timeout) becomes a 502
:class:`~miner.errors.MinerError` with a message that is safe to pass on.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Optional
from urllib.parse import urlsplit

import aiohttp
import msgspec
import orjson
from msgspec import UNSET

from shared.chat_stream import finish
from shared.http_pool import HttpPool
from shared.wire_chunks import DOES_NOT_FIT

from ..errors import MinerError
from .base import ChoiceStream, Outcome, all_at_once
from .builtin import count_tokens, prompt_tokens


def upstream_payload(request: Any, model: str, index: int) -> dict[str, Any]:
    """The OpenAI request body for choice ``index`` of a miner request.

    Streamed only when the miner's caller asked for a stream: a whole answer
    is one JSON object for the model server to send and for us to parse,
    instead of an event per token.
    """
    sampling = request.sampling_parameters
    stream = bool(getattr(request, "stream", True))
    payload = {
        "model": model,
        "messages": [message.model_dump(exclude_none=True) for message in request.messages],
        "stream": stream,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "seed": request.seed + index,
    }
    if stream:
        payload["stream_options"] = {"include_usage": True}
    return payload


def is_event_stream(content_type: str, *, asked_for_stream: bool) -> bool:
    """Whether an answer is read as server-sent events: so it says, or (saying neither this nor JSON, as a
    small server's ``text/plain`` or no type at all) a stream is what was asked for."""
    if content_type == "text/event-stream":
        return True
    if content_type == "application/json":
        return False
    return asked_for_stream


async def sse_batches(body: Any) -> AsyncIterator[list[bytes]]:
    """The ``data`` of each server-sent event, in batches: the events that one read completed.

    Multi-line data is joined with newlines. A batch holds every event that
    arrived together, so that the miner can pass them on in one write.

    The text is cut into events at blank lines first (``_events``): the usual event, one ``data:`` line, is
    then a slice, where a loop over lines took two steps of Python per event (its line and the blank one).
    What follows the last blank line waits for the next read.
    """
    pending = b""  # the text of an event not ended yet (a blank line ends one)
    async for received in body.iter_any():
        received = pending + received
        held = b""
        if b"\r" in received:  # lines may end in CR LF, LF or a lone CR (the SSE format allows all three)
            if received.endswith(b"\r"):  # perhaps the first half of a CR LF: decided by the next read
                received, held = received[:-1], b"\r"
            received = received.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, pending = received.split(b"\n\n")
        pending += held
        events = _events(blocks)
        if events:
            yield events
    events = _events([pending.replace(b"\r", b"\n")])  # the stream may end without a blank line
    if events:
        yield events


def _events(blocks: list[bytes]) -> list[bytes]:
    """The ``data`` of each event in ``blocks`` (an event's lines, its blank line cut off; line ends are LF by
    now). Several ``data`` lines are joined with newlines; comments and other fields are skipped; a block
    with no ``data`` line (a comment alone, a blank line more) is no event."""
    events = []
    for block in blocks:
        if block[:6] == b"data: " and b"\n" not in block:  # the usual event; slices: bytes' startswith is slow
            events.append(block[6:])
            continue
        data = [line[6:] if line[5:6] == b" " else line[5:] for line in block.split(b"\n") if line[:5] == b"data:"]
        if data:
            events.append(b"\n".join(data))
    return events


def json_bytes(payload: Any) -> bytes:
    try:
        return orjson.dumps(payload)
    except TypeError:  # an integer beyond 64 bits (a seed can be any integer)
        return json.dumps(payload).encode()


def upstream_error_message(status: int, text: str) -> str:
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text.strip()
    return f"upstream answered {status}: {str(message)[:300]}"


CONNECT_SECONDS = 10.0
READ_SECONDS = 120.0  # the longest silence between two pieces of an answer (a long prompt's first token)
DRAIN_SECONDS = 0.05  # how long the end of a body after [DONE] may take before the connection is dropped


class UpstreamBackend:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, *, api_key: str = "", model: str = "",
                 pool: Optional[HttpPool] = None):
        self.session = session
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.model = model
        address = urlsplit(self.url)
        self.pool = pool if address.scheme == "http" and address.hostname else None
        self.host, self.port = address.hostname, address.port or 80
        self.path = address.path + (f"?{address.query}" if address.query else "")

    def open(self, request: Any, model: str, index: int) -> ChoiceStream:
        outcome = Outcome()
        payload = upstream_payload(request, self.model or model, index)
        return ChoiceStream(self._batches(payload, outcome), outcome)

    async def close(self) -> None:
        return None  # the session belongs to the app's lifespan

    async def _batches(self, payload: dict[str, Any], outcome: Outcome) -> AsyncIterator[list[str]]:
        text: list[str] = []
        reading = _EventReader(outcome)
        try:
            async with self._post(json_bytes(payload)) as response:
                if response.status != 200:
                    raise MinerError(502, upstream_error_message(response.status, await response.text()))
                if is_event_stream(response.content_type, asked_for_stream=payload["stream"]):
                    batches = sse_batches(response.content)
                else:  # a whole answer, also from a server that ignores "stream"
                    batches = all_at_once([await response.read()])
                async for events in batches:
                    pieces, failure = reading.take(events)
                    if pieces:  # what came before a failure is sent before it
                        text.extend(pieces)
                        yield pieces
                    if failure is not None:
                        raise failure
                    if reading.done:
                        # What follows [DONE] (the chunked body's end, normally in the same read) is
                        # read, so that the kept connection goes back to the pool instead of being
                        # closed unfinished; a server that holds it back longer loses the connection.
                        await batches.aclose()
                        await finish(response, seconds=DRAIN_SECONDS)
                        break
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise MinerError(502, f"upstream unreachable: {type(exc).__name__}: {exc}"[:300]) from None
        finally:
            if not reading.reported_prompt:  # counted here only when the upstream did not say (most do)
                outcome.prompt_tokens = prompt_tokens(payload["messages"])
        if not reading.reported_usage:
            outcome.completion_tokens = count_tokens("".join(text))

    def _post(self, body: bytes) -> Any:
        """``async with`` it for the upstream's answer: ``status``, ``content_type``, ``read()``, ``text()``,
        ``content.iter_any()`` (the pooled client's, or aiohttp's for ``https://``)."""
        if self.pool is not None:
            return self.pool.post(self.host, self.port, self.path, self.headers, body,
                                  connect_timeout=CONNECT_SECONDS, read_timeout=READ_SECONDS)
        return self.session.post(self.url, data=body, headers=self.headers)


class UpstreamDelta(msgspec.Struct):
    content: Any = None


class UpstreamChoice(msgspec.Struct):
    delta: Optional[UpstreamDelta] = None
    message: Any = UNSET  # a whole answer's: such an event is read as a dict (``_read``)
    finish_reason: Any = None


class UpstreamEvent(msgspec.Struct):
    """What the miner reads of an upstream's streamed event, typed as the decoder reads it: fewer instructions
    than a dict of every field (``shared.wire_chunks``, where the API reads miners the same way). An event
    these types do not fit is read as a dict, by the same rules."""

    error: Any = None
    usage: Optional[dict] = None
    choices: Optional[list[UpstreamChoice]] = None


_UPSTREAM_EVENT = msgspec.json.Decoder(UpstreamEvent)


class _EventReader:
    """Reads upstream chunks into content pieces, filling in the outcome as it goes."""

    def __init__(self, outcome: Outcome):
        self.outcome = outcome
        self.reported_usage = False
        self.reported_prompt = False
        self.done = False

    def take(self, events: list[bytes]) -> tuple[list[str], Optional[MinerError]]:
        """The content of ``events`` up to ``[DONE]``, and the error that stopped them, if any."""
        pieces: list[str] = []
        for data in events:
            if data.strip() == b"[DONE]":
                self.done = True
                break
            try:
                event = _UPSTREAM_EVENT.decode(data)
            except DOES_NOT_FIT:
                event = None
            try:
                if event is None or event.error or not self._read_typed(event, pieces):
                    # odd types, not JSON, an error event, a whole message: read as a dict, as always
                    self._read(orjson.loads(data), pieces)
            except MinerError as exc:
                return pieces, exc
            except ValueError as exc:
                return pieces, MinerError(502, f"upstream sent an unreadable event: {exc}"[:300])
        return pieces, None

    def _read_typed(self, event: UpstreamEvent, pieces: list[str]) -> bool:
        """``_read`` for an event the decoder typed, without an error; False, having read nothing, when a choice
        carries a whole ``message`` (then ``_read`` decides between it and the delta, as it always has)."""
        choices = event.choices or ()
        for choice in choices:
            if choice.message is not UNSET:
                return False
        usage = event.usage
        if usage:
            self._usage(usage)
        for choice in choices:
            if choice.finish_reason:
                self.outcome.finish_reason = choice.finish_reason
            content = choice.delta.content if choice.delta is not None else None
            if content:
                pieces.append(content)
        return True

    def _read(self, event: Any, pieces: list[str]) -> None:
        if not isinstance(event, dict):
            raise ValueError("not a JSON object")
        if event.get("error"):
            raise MinerError(502, upstream_error_message(502, json.dumps(event)))
        usage = event.get("usage")
        if usage:
            self._usage(usage)
        for choice in event.get("choices") or []:
            part = choice.get("delta") or choice.get("message") or {}
            content = part.get("content")
            if choice.get("finish_reason"):
                self.outcome.finish_reason = choice["finish_reason"]
            if content:
                pieces.append(content)

    def _usage(self, usage: Any) -> None:
        self.reported_usage = True
        if "prompt_tokens" in usage:
            self.reported_prompt = True
            self.outcome.prompt_tokens = int(usage["prompt_tokens"])
        self.outcome.completion_tokens = int(usage.get("completion_tokens", 0))

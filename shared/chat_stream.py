"""Read a miner's streamed chat answer, and keep what scoring needs of it.

Both the API (which relays the winner to the client) and the validator (which
sends synthetic tasks) read miners' SSE streams the same way::

    record = StreamRecord(started=time.monotonic())
    async for chunk in sse_chunks(response.content):   # WireChunk (or dict); raises StreamBroken
        record.take(chunk)                              # True when the chunk carried content
    await finish(response)                              # keep the connection reusable
    record.response(uid, hotkey, "ok")                  # -> shared.schemas.MinerResponse
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Optional, Union

from .http_pool import PooledResponse
from .schemas import MAX_CHOICES, MinerResponse
from .wire_chunks import StreamBroken, WireChunk, decode_event  # StreamBroken: imported from here too


async def sse_chunks(content: Any, max_bytes: Optional[int] = None) -> AsyncIterator[Union[WireChunk, dict]]:
    """The chunks of ``data:`` lines up to ``[DONE]``, one at a time (``SseBatches``: a read's at once), as
    ``shared.wire_chunks.decode_event`` gives them.

    ``content`` is an aiohttp ``StreamReader`` (or the pooled client's body): it is read in whatever pieces
    arrive (``iter_any``) and split into lines here, which costs one await per network read instead of one
    per line. ``max_bytes``: ``StreamBroken`` once the stream has brought more (a miner sending without end).
    """
    async for chunks in SseBatches(content, max_bytes):
        for chunk in chunks:
            yield chunk


class SseBatches:
    """``async for chunks in SseBatches(response.content)``: the chunks that each network read completes, as
    a list, up to ``[DONE]``; ``StreamBroken`` for garbage, an error event, or a stream that ends without
    ``[DONE]``, after the chunks that came before it.

    The API's streamed miner call takes a read's chunks in one step: an async generator that yields each
    chunk costs a generator step per chunk, twenty for a twenty-token answer that arrived in one read. A
    class, not a generator, for the same reason as ``shared.http_pool.BodyPieces``.
    """

    __slots__ = ("_pieces", "_pending", "_failure", "_done", "_cap", "bytes_read")

    def __init__(self, content: Any, max_bytes: Optional[int] = None) -> None:
        self._pieces = content.iter_any()
        self._pending = b""  # a line begun in an earlier read
        self._failure: Optional[StreamBroken] = None  # found after chunks that were given first
        self._done = False  # [DONE] was read (whatever followed it in its read is not)
        self._cap = max_bytes  # the most the stream may bring (None: no cap); past it, StreamBroken
        self.bytes_read = 0  # of the body so far (the cap's count; the API's relay counts what waits for a client)

    def __aiter__(self) -> "SseBatches":
        return self

    async def __anext__(self) -> list[Union[WireChunk, dict]]:
        if self._failure is not None:
            raise self._failure
        while not self._done:
            try:
                piece = await anext(self._pieces)
            except StopAsyncIteration:
                raise StreamBroken("stream ended without [DONE]") from None
            self.bytes_read += len(piece)
            if self._cap is not None and self.bytes_read > self._cap:
                # a miner that streams without end must not fill the worker's memory
                raise StreamBroken(f"answer larger than the cap on a miner's answer ({self._cap} bytes)")
            chunks = self._feed(piece)
            if chunks:
                return chunks
            if self._failure is not None:
                raise self._failure
        raise StopAsyncIteration

    def _feed(self, piece: bytes) -> list[Union[WireChunk, dict]]:
        if self._pending:
            piece = self._pending + piece
        lines = piece.split(b"\n")
        self._pending = lines.pop()
        chunks: list[Union[WireChunk, dict]] = []
        for raw in lines:
            line = raw.strip()
            # a slice's comparison, not ``startswith``: bytes' ``startswith`` parses its arguments the slow way,
            # and this runs for every line of every stream (the blank line after each event included)
            if line[:5] != b"data:":
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                self._done = True
                break
            try:
                chunks.append(decode_event(data))
            except StreamBroken as failure:
                self._failure = failure
                break
        return chunks


async def finish(response: Any, seconds: float = 1.0) -> None:
    """Read what follows ``[DONE]`` (the end of the chunked body) so the pooled connection is reused.

    Leaving it unread makes aiohttp close the connection, and the next request
    to that miner pays for a new one. A pooled answer (``shared.http_pool``) drains on its connection's own
    timer, and usually has nothing left to read.
    """
    if isinstance(response, PooledResponse):
        await response.drain(seconds)
        return
    try:
        async with asyncio.timeout(seconds):
            await response.read()
    except Exception:  # best effort: whatever goes wrong here, the answer itself is already read
        response.close()


def choice_index(choice: Any, what: str, choices: int = MAX_CHOICES) -> int:
    """The ``index`` of one of a miner's choices (0 when not given); ``StreamBroken`` when the choice is not
    an object or its index not an integer the request asked for (0 to ``choices`` - 1, its ``n``; ``what``:
    "chunk" or "answer", for the message). A choice nobody asked for would reach the client as one more
    answer, and its text would be counted against the client's token quota."""
    if type(choice) is not dict:
        raise StreamBroken(f"malformed {what}: a choice is not an object")
    index = choice.get("index", 0)
    if type(index) is not int:
        raise StreamBroken(f"malformed {what}: a choice's index is not an integer")
    if not 0 <= index < choices:
        raise StreamBroken(f"malformed {what}: a choice's index is not one the request asked for")
    return index


FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls", "function_call"})  # OpenAI's
MAX_MODEL_NAME = 256  # characters of the model a miner says it answered with


def finish_reason(choice: dict, what: str) -> Optional[str]:
    """A choice's ``finish_reason`` when it gives one, as one of OpenAI's (any other text: ``stop``, the
    usual end; clients switch on these values); ``StreamBroken`` when it is not text."""
    reason = choice.get("finish_reason")
    if not reason:
        return None
    if type(reason) is not str:
        raise StreamBroken(f"malformed {what}: finish_reason is not text")
    return openai_reason(reason)


def openai_reason(reason: str) -> str:
    """A finish reason as one of OpenAI's: any other text is ``stop``, the usual end."""
    return reason if reason in FINISH_REASONS else "stop"


def model_name(model: Any, what: str) -> Optional[str]:
    """The model a miner says it answered with (None when it says none); ``StreamBroken`` when that is not text
    or longer than any model's name (``MAX_MODEL_NAME``): it can be shown to the client and goes to the
    validator with the answer."""
    if type(model) is not str:
        raise StreamBroken(f"malformed {what}: model is not text")
    if len(model) > MAX_MODEL_NAME:
        raise StreamBroken(f"malformed {what}: model is longer than {MAX_MODEL_NAME} characters")
    return model or None


SPECIAL_TOKENS = 16  # per choice: end-of-text and the like, counted by a tokenizer but sent as no text


def event_budget(max_tokens: int, choices: int) -> int:
    """The most events a streamed answer may take: four per token asked for (one is the usual), per choice,
    and a few more (role, finish and usage events). Past it, the miner is sending events for their own sake:
    every one costs its reader a parse, and a stream of empty ones within ``MINER_MAX_ANSWER_BYTES`` would
    be millions of them, seconds of the worker's CPU for one request."""
    return 4 * (max_tokens + SPECIAL_TOKENS) * choices + 64


def believable_count(value: Any, ceiling: int) -> Optional[int]:
    """A token count a miner reported, when it can be true: a whole number (not a bool) from 0 to ``ceiling``.

    Anything else (text, a fraction, a negative count that would hand tokens back, a count past what was
    sent, big enough to overflow a store's column) is None, and the caller counts for itself.
    """
    return value if type(value) is int and 0 <= value <= ceiling else None


# What ``StreamRecord.take`` keeps of a choice for a client: (index, the delta says the assistant speaks, its text if
# it is text, one of OpenAI's finish reasons). A tuple: one is made for every chunk relayed, and some wait in memory
# for a slow client (``api.miner_call.Relay``), where a parsed chunk's dicts took five times its bytes.
ShownChoice = tuple[int, bool, Optional[str], Optional[str]]


class StreamRecord:
    """Text per choice, arrival times, finish reasons and usage of one miner's answer.

    ``choices``: how many the request asked for (its ``n``); a chunk or answer with a choice past them is
    malformed. ``max_events``: the most chunks a stream may bring (``event_budget``; None: no limit)."""

    def __init__(self, started: Optional[float] = None, choices: int = MAX_CHOICES,
                 max_events: Optional[int] = None):
        self.started = time.monotonic() if started is None else started
        self.choices = choices
        self.events_left = max_events
        self.texts: dict[int, list[str]] = {}
        self.timings: list[float] = []
        self.finish_reasons: dict[int, str] = {}
        self.usage: Optional[dict] = None
        self.model: Optional[str] = None

    def take(self, chunk: Union[WireChunk, dict[str, Any]], shown: Optional[list] = None) -> bool:
        """Keep what a ``chat.completion.chunk`` adds; True when it carried content.

        ``StreamBroken`` for a chunk whose parts are not what OpenAI's have (a list of choices, each an object
        with an integer ``index``, an object ``delta`` whose ``content`` is text, a text ``finish_reason``;
        ``model`` text, ``usage`` an object): a miner's garbage fails its answer here instead of as an error
        in whatever reads the record later. This runs for every chunk of every miner, so it is written out.
        Most chunks arrive typed (``shared.wire_chunks.WireChunk``) and take the short way (``_take_wire``);
        the rules below are the whole of them, for the chunks the types did not fit.

        ``shown``: a list to append, per choice, the parts a client may be shown (``ShownChoice``: the index, whether
        the delta says the assistant speaks, its text if it is text, one of OpenAI's finish reasons), taken in
        the same pass as the checks: what the API relays is rebuilt from these and nothing else of the chunk.
        """
        if type(chunk) is WireChunk:
            return self._take_wire(chunk, shown)
        if self.events_left is not None:
            self.events_left -= 1
            if self.events_left < 0:
                raise StreamBroken("malformed stream: more events than the tokens asked for could take")
        model = chunk.get("model")
        if model is not None:
            model = model_name(model, "chunk")
            if self.model is None:
                self.model = model
        usage = chunk.get("usage")
        if usage:
            if type(usage) is not dict:
                raise StreamBroken("malformed chunk: usage is not an object")
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            return False
        if type(choices) is not list:
            raise StreamBroken("malformed chunk: choices is not a list")
        has_content = False
        for choice in choices:
            index = choice_index(choice, "chunk", self.choices)
            delta = choice.get("delta")
            content = None
            if delta:
                if type(delta) is not dict:
                    raise StreamBroken("malformed chunk: a delta is not an object")
                content = delta.get("content")
                if content:
                    if type(content) is not str:
                        raise StreamBroken("malformed chunk: content is not text")
                    self._keep(index, content)
                    has_content = True
            reason = finish_reason(choice, "chunk")
            if reason:
                self.finish_reasons[index] = reason
            if shown is not None:
                shown.append((index, bool(delta) and delta.get("role") == "assistant",
                              content if type(content) is str else None, reason))
        return has_content

    def _take_wire(self, chunk: WireChunk, shown: Optional[list]) -> bool:
        """``take`` for a chunk whose types the decoder checked (``shared.wire_chunks``): what is left are the
        rules that types cannot say (the event budget, the index range, the model name's length, OpenAI's
        finish reasons), each with the message ``take`` gives."""
        if self.events_left is not None:
            self.events_left -= 1
            if self.events_left < 0:
                raise StreamBroken("malformed stream: more events than the tokens asked for could take")
        model = chunk.model
        if model is not None and model != self.model:
            model = model_name(model, "chunk")
            if self.model is None:
                self.model = model
        if chunk.usage:
            self.usage = chunk.usage
        choices = chunk.choices
        if not choices:
            return False
        has_content = False
        for choice in choices:
            index = choice.index
            if not 0 <= index < self.choices:
                raise StreamBroken("malformed chunk: a choice's index is not one the request asked for")
            delta = choice.delta
            content = None
            if delta is not None:
                content = delta.content
                if content:
                    self._keep(index, content)
                    has_content = True
            reason = choice.finish_reason
            if reason:
                reason = self.finish_reasons[index] = openai_reason(reason)
            else:
                reason = None
            if shown is not None:
                shown.append((index, delta is not None and delta.role == "assistant", content, reason))
        return has_content

    def _keep(self, index: int, content: str) -> None:
        """A choice's next piece of text, and for the first choice the time it arrived (what speed is scored on)."""
        texts = self.texts.get(index)
        if texts is None:
            self.texts[index] = [content]
        else:
            texts.append(content)
        if index == 0:
            self.timings.append(time.monotonic() - self.started)

    def take_completion(self, completion: dict[str, Any]) -> bool:
        """A whole ``chat.completion`` (a non-streamed answer): one chunk per choice, arriving now.

        ``StreamBroken`` for parts that are not what OpenAI's completion has (as ``take``)."""
        if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
            raise StreamBroken("not a chat.completion object")
        model = completion.get("model")
        self.model = None if model is None else model_name(model, "answer")
        self.usage = completion.get("usage") if isinstance(completion.get("usage"), dict) else None
        has_content = False
        for choice in completion["choices"]:
            index = choice_index(choice, "answer", self.choices)
            message = choice.get("message")
            if message is not None and type(message) is not dict:
                raise StreamBroken("malformed answer: a message is not an object")
            content = (message or {}).get("content")
            if isinstance(content, str) and content:
                self.texts[index] = [content]
                has_content = True
            reason = finish_reason(choice, "answer")
            if reason:
                self.finish_reasons[index] = reason
        if 0 in self.texts:
            self.timings.append(time.monotonic() - self.started)
        return has_content

    @property
    def text(self) -> str:
        return "".join(self.texts.get(0, []))

    def claimed_completion_tokens(self) -> Optional[int]:
        """The miner's own count of the tokens it generated, when it can be true (``believable_count``): no
        more than one per character it sent, and a few special ones per choice. None otherwise, and then
        whoever bills or logs counts the text itself: a miner's usage is its word, not evidence."""
        claimed = self.usage.get("completion_tokens") if self.usage else None
        if claimed is None:
            return None
        sent = sum(len(piece) for parts in self.texts.values() for piece in parts)
        return believable_count(claimed, sent + SPECIAL_TOKENS * max(1, len(self.texts)))

    def response(self, uid: int, hotkey: str, status: str, error: Optional[str] = None) -> MinerResponse:
        return MinerResponse(
            uid=uid,
            hotkey=hotkey,
            status=status,
            chunks=self.texts.get(0, []),
            timings=self.timings,
            finish_reason=self.finish_reasons.get(0),
            error=error,
            completion_tokens=self.claimed_completion_tokens(),
            model=self.model,
        )

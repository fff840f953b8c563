"""One call to one miner, recorded for scoring as it goes.

A streamed call reads the miner's SSE stream to the end whether or not its
chunks reach the client, so every miner's full answer can be forwarded to the
validator. ``first`` resolves once: True when the first chunk with content
arrives, False when the miner failed before that (connection refused, non-2xx,
garbage, timeout), which is when the race replaces it. With
``commit_chunks=k`` (``STREAM_COMMIT_CHUNKS`` in the plain chat race),
``first`` waits for k content chunks, or for a stream that ended well with
fewer: a miner that breaks after its first chunk then fails before the commit
point and is replaced, instead of winning and breaking in front of the client
(docs/routing.md, "the commit point").

A client that asked for a whole answer gets miners asked for whole answers
(one JSON object each, no per-chunk work on either side); ``first`` then
resolves when a miner's complete answer arrives, so the race picks the first
miner to finish.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Coroutine, Optional

import aiohttp
import orjson

from shared.chat_stream import ShownChoice, SseBatches, StreamBroken, StreamRecord, event_budget, finish
from shared.schemas import MinerRecord, MinerResponse
from shared.signed_http import SignedClient, TooLarge, read_capped

END = object()  # sentinel on the relay: the stream is over
OVERRUN = object()  # sentinel on the relay, alone: the client fell too far behind (``Relay.count``)


@dataclass(frozen=True, slots=True)
class CallLimits:
    """How long a miner may take and how much it may send, for every call of a worker (``Gateway.call_limits``,
    from ``MINER_CONNECT_TIMEOUT``, ``MINER_READ_TIMEOUT``, ``FIRST_CHUNK_TIMEOUT``, ``MINER_MAX_ANSWER_BYTES``
    and ``MINER_STREAM_TIMEOUT``)."""

    connect_timeout: float
    read_timeout: float
    first_chunk_timeout: float
    max_answer_bytes: Optional[int] = None  # None: no cap
    stream_timeout: Optional[float] = None  # a whole stream, from the call on; None: no limit
    relay_buffer_bytes: Optional[int] = None  # of the winner's stream waiting for a slow client; None: no cap

    @classmethod
    def of(cls, settings: Any) -> "CallLimits":
        return cls(settings.miner_connect_timeout, settings.miner_read_timeout, settings.first_chunk_timeout,
                   settings.miner_max_answer_bytes, settings.miner_stream_timeout or None,
                   settings.stream_relay_buffer_bytes)


ERROR_BODY_BYTES = 65536  # of a miner's error answer: its message is in the first few hundred


async def error_detail(response: Any) -> str:
    """The start of a miner's error answer (for the call's error), read no further than ``ERROR_BODY_BYTES``."""
    try:
        return (await read_capped(response, ERROR_BODY_BYTES))[:200].decode("utf-8", "replace")
    except TooLarge:
        return f"(an error body larger than {ERROR_BODY_BYTES} bytes)"


class Relay:
    """The winner's chunks on their way to the client: the call appends, the relay takes everything queued.

    A stream's chunks are taken in batches anyway (what arrived together leaves in one write), so this is a
    list and, while it is empty, one future to wait on: ``asyncio.Queue`` cost four or five Python calls per
    chunk on each side, about a tenth of an API worker's CPU on a 20-chunk stream.

    The client's side takes only as fast as the client reads (each write waits for the connection's buffer to
    drain), while the miner's side goes on reading at the miner's pace: its timings are scored, and a client
    must not be able to slow a miner down by reading slowly. What waits between them is what the client may be
    shown of each chunk (``ShownChoice`` tuples, whose text the call's record holds anyway): about as much
    memory as the stream's own bytes, where the parsed chunks took five times as much. It is capped
    (``count``): past ``limit`` bytes of the stream since the client's side last took, what waits is let go
    and the client's side is handed ``OVERRUN`` alone, once; nothing more is queued. The miner's answer is
    still read whole and scored.
    """

    def __init__(self, items: Optional[list] = None, limit: Optional[int] = None) -> None:
        self._items: list = items if items is not None else []  # ``items`` is the relay's from now on
        self._waiter: Optional[asyncio.Future] = None
        self.limit = limit  # None: no cap
        self.waiting_bytes = 0  # of the miner's stream, since the client's side last took
        self.overrun = False

    def put(self, item: object) -> None:
        if self.overrun:
            return
        self._items.append(item)
        self._wake()

    def count(self, received: int) -> None:
        """``received`` more bytes' worth of the miner's stream were queued (the chunks of a network read)."""
        self.waiting_bytes += received
        if self.limit is not None and self.waiting_bytes > self.limit and not self.overrun:
            self.overrun = True
            self._items = [OVERRUN]  # the chunks waiting are let go now, not when the client gets round to them
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self) -> list:
        """Everything queued, in order; waits while there is nothing."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items, self._items = self._items, []
        self.waiting_bytes = 0
        return items


class MinerCall:
    def __init__(self, miner: MinerRecord, commit_chunks: int = 1, choices: int = 1, max_tokens: Optional[int] = None,
                 relayed: bool = True):
        """``choices``: the ``n`` the miner is asked for; an answer with a choice past them is malformed.
        ``max_tokens``: what it is asked to generate at most; a stream of more events than that allows
        (``event_budget``) is malformed too (None: no limit). ``relayed``: whether its chunks may go to a client
        (False for the calls of mixture's and reasoning's rounds, which are read whole)."""
        self.miner = miner
        self.commit_chunks = max(commit_chunks, 1)
        self.content_chunks = 0  # chunks with content so far
        self.shadow = False  # asked alongside the race, never answers the client (api.routing)
        self.first: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.relay: Optional[Relay] = None  # set for the winner: chunks go to the client
        self.backlog: list[list[ShownChoice]] = []  # chunks' choices before the winner was chosen
        self.keeps_chunks = relayed  # False: no chunk will be relayed (a loser, a round's call): none is kept
        self.relay_limit: Optional[int] = None  # ``CallLimits.relay_buffer_bytes``, once the call runs
        self.record = StreamRecord(choices=choices,
                                   max_events=None if max_tokens is None else event_budget(max_tokens, choices))
        self.status = "ok"
        self.error: Optional[str] = None
        self.task: Optional[asyncio.Task] = None
        self.elapsed: Optional[float] = None  # seconds from the call's start to its end
        self.request_bytes = 0  # the size of what the miner was sent: a ceiling on the prompt tokens it may claim
        self._watcher: Optional[asyncio.Future] = None  # see ``watch``

    def start(self, client: SignedClient, body: bytes, limits: CallLimits, *, stream: bool = True) -> None:
        """``stream=False`` when ``body`` asks for a whole answer: ``first`` then means "answered"."""
        self.task = asyncio.create_task(self.run(client, body, limits, stream=stream), name=f"miner-{self.miner.uid}")

    def run(self, client: SignedClient, body: bytes, limits: CallLimits, *,
            stream: bool = True) -> Coroutine[Any, Any, None]:
        """The call, for the caller's own task to await (``start`` gives it a task of its own)."""
        self.request_bytes = len(body)
        self.relay_limit = limits.relay_buffer_bytes
        return self._run(client, body, limits) if stream else self._run_whole(client, body, limits)

    def become_winner(self) -> Relay:
        """Start relaying: what arrived so far first, then every new chunk, then END (``Relay``: at most the call
        limits' ``relay_buffer_bytes`` of the stream wait for the client)."""
        relay = self.relay = Relay(self.backlog, self.relay_limit)
        self.backlog = []
        if self.task is not None and self.task.done():
            relay.put(END)
        return relay

    def lost(self) -> None:
        """Another call answers the client: nothing of this one's chunks is kept for a client any more (its record
        still is, for scoring). A loser goes on to the end of its answer, and every chunk it read was held until
        the request was over."""
        self.keeps_chunks = False
        self.backlog = []

    def response_record(self) -> MinerResponse:
        return self.record.response(self.miner.uid, self.miner.hotkey, self.status, self.error)

    def watch(self) -> asyncio.Future:
        """A future of its own that resolves together with ``first`` (in the same step, not a callback later).

        For a race with one racer in flight (``api.race``): awaiting it costs one turn of the event loop less
        than ``asyncio.wait`` on ``first``, and cancelling the awaiting task cancels only this future, never
        ``first`` (whose other readers, e.g. the commit latency, would then see a cancellation).
        """
        watcher = self._watcher = asyncio.get_running_loop().create_future()
        if self.first.done():
            watcher.set_result(None)
        return watcher

    def _settle_first(self, value: bool) -> None:
        if not self.first.done():
            self.first.set_result(value)
            watcher = self._watcher
            if watcher is not None and not watcher.done():
                watcher.set_result(None)

    def _take(self, chunk: dict) -> None:
        # what a client may be shown of the chunk, kept in the checks' pass; nothing for a loser or a round's call
        shown: Optional[list[ShownChoice]] = [] if self.relay is not None or self.keeps_chunks else None
        has_content = self.record.take(chunk, shown)
        if shown:  # a chunk without choices (usage, say) has nothing for the client
            if self.relay is not None:
                self.relay.put(shown)
            elif self.keeps_chunks:
                self.backlog.append(shown)
        if has_content:
            self.content_chunks += 1
            if self.content_chunks == self.commit_chunks:  # once: ``first`` is settled from then on
                self._settle_first(True)

    # How a call ends, written out in ``_run_whole`` and ``_run`` rather than as a context manager: an
    # ``asynccontextmanager`` is an async generator and four more Python calls on every miner call.
    _ENDINGS = (asyncio.CancelledError, TimeoutError, StreamBroken, aiohttp.ClientError, OSError)

    def _failed(self, exc: BaseException) -> bool:
        """``status``/``error`` for what ended the call; True when the caller must re-raise it (a cancellation)."""
        if isinstance(exc, asyncio.CancelledError):
            self.status, self.error = "cancelled", "cancelled"
            return True
        if isinstance(exc, TimeoutError):
            self.status, self.error = "timeout", "no answer in time" if not self.record.texts else \
                "the stream went silent or ran out of time (MINER_READ_TIMEOUT, MINER_STREAM_TIMEOUT)"
        elif isinstance(exc, StreamBroken):
            self.status, self.error = "error", str(exc)
        else:
            self.status, self.error = "error", f"{type(exc).__name__}: {exc}"
        return False

    def _ended(self) -> None:
        """Timed, and ``first`` resolved, however the call ended."""
        self.elapsed = time.monotonic() - self.record.started
        self._settle_first(False)
        if self.relay is not None:
            self.relay.put(END)

    async def _run_whole(self, client: SignedClient, body: bytes, limits: CallLimits) -> None:
        """A non-streamed answer: one JSON object, no per-chunk work on either side."""
        self.record.started = time.monotonic()
        try:
            # The time limit is the client connection's own lazy timer (``total_timeout``), not ``asyncio.timeout``:
            # a loop timer armed and cancelled on every call (docs/performance.md, round 10).
            async with client.post_stream(self.miner.address, "/v1/chat/completions", body,
                                          receiver=self.miner.hotkey, connect_timeout=limits.connect_timeout,
                                          read_timeout=limits.read_timeout,
                                          total_timeout=limits.first_chunk_timeout + limits.read_timeout) as response:
                if response.status != 200:
                    raise StreamBroken(f"HTTP {response.status}: {await error_detail(response)}")
                try:
                    payload = await read_capped(response, limits.max_answer_bytes)
                except TooLarge:
                    raise StreamBroken(f"answer larger than the cap on a miner's answer ({limits.max_answer_bytes}"
                                       " bytes, MINER_MAX_ANSWER_BYTES)") from None
            try:
                completion = orjson.loads(payload)
            except orjson.JSONDecodeError:
                raise StreamBroken("unparsable answer") from None
            if not self.record.take_completion(completion):
                raise StreamBroken("empty answer")
            self._settle_first(True)
        except self._ENDINGS as exc:
            if self._failed(exc):
                raise
        finally:
            self._ended()

    async def _run(self, client: SignedClient, body: bytes, limits: CallLimits) -> None:
        self.record.started = time.monotonic()
        try:
            # The first-chunk deadline is the call's total time limit, moved to the limit on a whole stream once
            # the commit point is reached: the connection's own lazy timer, not a loop timer armed and cancelled
            # per call (round 11).
            post = client.post_stream(self.miner.address, "/v1/chat/completions", body, receiver=self.miner.hotkey,
                                      connect_timeout=limits.connect_timeout, read_timeout=limits.read_timeout,
                                      total_timeout=limits.first_chunk_timeout)
            async with post as response:
                if response.status != 200:
                    raise StreamBroken(f"HTTP {response.status}: {await error_detail(response)}")
                waiting_first = True
                batches = SseBatches(response.content, limits.max_answer_bytes)
                counted = 0  # bytes of the stream already counted on the relay
                async for chunks in batches:  # a read's chunks at once
                    for chunk in chunks:
                        self._take(chunk)
                    if self.relay is not None:
                        self.relay.count(batches.bytes_read - counted)
                        counted = batches.bytes_read
                    if waiting_first and self.first.done():
                        post.extend_total_timeout(limits.stream_timeout)  # past the first-chunk deadline
                        waiting_first = False
                if self.record.texts:
                    self._settle_first(True)  # [DONE] after content: whole, perhaps before the commit point
                await finish(response)
            if not self.record.texts:
                raise StreamBroken("empty answer")
        except self._ENDINGS as exc:
            if self._failed(exc):
                raise
        finally:
            self._ended()

"""One streamed call to one miner, recorded for scoring as it goes.

The call reads the miner's SSE stream to the end whether or not its chunks
reach the client, so every miner's full answer can be forwarded to the
validator. ``first`` resolves once: True when the first chunk with content
arrives, False when the miner failed before that (connection refused, non-2xx,
garbage, timeout), which is when the race replaces it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Optional

import aiohttp

from shared.schemas import MinerRecord, MinerResponse
from shared.signed_http import SignedClient

END = object()  # sentinel on the relay queue: the stream is over


class MinerFailure(Exception):
    """The miner broke the protocol or the connection."""


class MinerCall:
    def __init__(self, miner: MinerRecord):
        self.miner = miner
        self.first: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.relay: Optional[asyncio.Queue] = None  # set for the winner: chunks go to the client
        self.backlog: list[dict] = []  # chunks before the winner was chosen
        self.texts: dict[int, list[str]] = {}
        self.timings: list[float] = []
        self.finish_reasons: dict[int, str] = {}
        self.usage: Optional[dict] = None
        self.model: Optional[str] = None
        self.status = "ok"
        self.error: Optional[str] = None
        self.task: Optional[asyncio.Task] = None
        self.elapsed: Optional[float] = None  # seconds from the call's start to its end

    def start(self, client: SignedClient, body: bytes, *, connect_timeout: float, read_timeout: float,
              first_chunk_timeout: float) -> None:
        self.task = asyncio.create_task(
            self._run(client, body, connect_timeout, read_timeout, first_chunk_timeout),
            name=f"miner-{self.miner.uid}",
        )

    def become_winner(self) -> asyncio.Queue:
        """Start relaying: what arrived so far first, then every new chunk, then END."""
        self.relay = asyncio.Queue()
        for chunk in self.backlog:
            self.relay.put_nowait(chunk)
        self.backlog.clear()
        if self.task is not None and self.task.done():
            self.relay.put_nowait(END)
        return self.relay

    @property
    def text(self) -> str:
        return "".join(self.texts.get(0, []))

    def response_record(self) -> MinerResponse:
        usage = self.usage or {}
        return MinerResponse(
            uid=self.miner.uid,
            hotkey=self.miner.hotkey,
            status=self.status,
            chunks=self.texts.get(0, []),
            timings=self.timings,
            finish_reason=self.finish_reasons.get(0),
            error=self.error,
            completion_tokens=usage.get("completion_tokens"),
        )

    def _settle_first(self, value: bool) -> None:
        if not self.first.done():
            self.first.set_result(value)

    def _emit(self, chunk: Any) -> None:
        if self.relay is not None:
            self.relay.put_nowait(chunk)
        else:
            self.backlog.append(chunk)

    def _take(self, chunk: dict, started: float) -> None:
        if "error" in chunk:
            error = chunk["error"]
            raise MinerFailure(error.get("message", str(error)) if isinstance(error, dict) else str(error))
        self.model = self.model or chunk.get("model")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        has_content = False
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index", 0))
            content = (choice.get("delta") or {}).get("content")
            if content:
                self.texts.setdefault(index, []).append(content)
                has_content = True
            if choice.get("finish_reason"):
                self.finish_reasons[index] = choice["finish_reason"]
        if has_content:
            self.timings.append(time.monotonic() - started)
        self._emit(chunk)
        if has_content:
            self._settle_first(True)

    async def _run(self, client: SignedClient, body: bytes, connect_timeout: float, read_timeout: float,
                   first_chunk_timeout: float) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(first_chunk_timeout) as deadline:
                async with client.post_stream(self.miner.address, "/v1/chat/completions", body,
                                              receiver=self.miner.hotkey, connect_timeout=connect_timeout,
                                              read_timeout=read_timeout) as response:
                    if response.status != 200:
                        detail = (await response.read())[:200].decode("utf-8", "replace")
                        raise MinerFailure(f"HTTP {response.status}: {detail}")
                    done = False
                    async for raw in response.content:
                        line = raw.strip()
                        if not line.startswith(b"data:"):
                            continue
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            done = True
                            break
                        try:
                            chunk = json.loads(data)
                        except ValueError:
                            raise MinerFailure("unparsable chunk") from None
                        if not isinstance(chunk, dict):
                            raise MinerFailure("chunk is not a JSON object")
                        self._take(chunk, started)
                        if self.first.done() and deadline.when() is not None:
                            deadline.reschedule(None)  # the first-chunk deadline no longer applies
                    if not done:
                        raise MinerFailure("stream ended without [DONE]")
            if not self.texts:
                raise MinerFailure("empty answer")
        except asyncio.CancelledError:
            self.status, self.error = "cancelled", "cancelled"
            raise
        except TimeoutError:
            self.status, self.error = "timeout", "no answer in time"
        except MinerFailure as exc:
            self.status, self.error = "error", str(exc)
        except (aiohttp.ClientError, OSError) as exc:
            self.status, self.error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            self.elapsed = time.monotonic() - started
            self._settle_first(False)
            if self.relay is not None:
                self.relay.put_nowait(END)

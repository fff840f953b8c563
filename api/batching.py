"""A bounded buffer that a background loop empties in batches: work kept off the request path.

    class Sender(BatchBuffer[Item]):
        async def send(self, batch: list[Item]) -> None: ...   # raise to keep the batch and retry

    sender.submit(item)        # from a request: an append, no I/O
    await sender.run()         # lifespan task: a batch when one is full, or every ``interval``
    sender.stop(); await sender.drain(timeout)   # at shutdown: what is buffered goes out

A batch that fails stays in the buffer and is retried with backoff. When the
buffer is full the oldest items go first and are counted (``dropped``), so an
outage downstream cannot exhaust the worker's memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, Optional, TypeVar

from loguru import logger

T = TypeVar("T")


class BatchBuffer(Generic[T]):
    what = "items"  # for log lines
    max_backoff = 5.0

    def __init__(self, *, batch_size: int, interval: float, max_buffer: int):
        self.batch_size = batch_size
        self.interval = interval
        self.max_buffer = max_buffer
        self.buffer: deque[T] = deque()
        self.sent = 0
        self.dropped = 0
        self._wake = asyncio.Event()
        self._stopping = False

    async def send(self, batch: list[T]) -> Optional[int]:
        """Deliver the batch, or raise to keep it for a retry; returns how many of its items the receiver
        refused for good (they are dropped and counted), None or 0 when it took them all."""
        raise NotImplementedError

    def submit(self, item: T) -> None:
        if len(self.buffer) >= self.max_buffer:
            self.buffer.popleft()
            self.dropped += 1
        self.buffer.append(item)
        if len(self.buffer) >= self.batch_size:
            self._wake.set()

    def stop(self) -> None:
        """Let ``run`` finish the batch it is sending and return (cancelling it could send a batch twice)."""
        self._stopping = True
        self._wake.set()

    async def flush_once(self) -> int:
        """Send one batch; returns how many items left the buffer."""
        batch = [self.buffer[i] for i in range(min(self.batch_size, len(self.buffer)))]
        if not batch:
            return 0
        refused = await self.send(batch) or 0
        for item in batch:  # drops during the send took from the left too: remove only what is still there
            if self.buffer and self.buffer[0] is item:
                self.buffer.popleft()
        self.sent += len(batch) - refused
        self.dropped += refused
        return len(batch)

    async def run(self) -> None:
        backoff = self.interval
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                return
            try:
                while await self.flush_once() == self.batch_size:
                    pass
                backoff = self.interval
            except Exception as exc:  # downstream is down or refused the batch: keep it, retry later
                backoff = min(max(backoff * 2, 0.5), self.max_backoff)
                logger.warning("sending {} failed, {} kept, retry in {:.1f}s: {}: {}", self.what, len(self.buffer),
                               backoff, type(exc).__name__, exc)

    async def drain(self, timeout: float) -> None:
        """At shutdown: keep sending until the buffer is empty or ``timeout`` passes."""
        try:
            async with asyncio.timeout(timeout):
                while self.buffer:
                    try:
                        await self.flush_once()
                    except Exception as exc:
                        logger.warning("sending {} failed at shutdown ({}); retrying", self.what, type(exc).__name__)
                        await asyncio.sleep(0.5)
        except TimeoutError:
            logger.error("{} {} not sent at shutdown", len(self.buffer), self.what)

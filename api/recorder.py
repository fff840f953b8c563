"""Write request logs and usage off the request path, in batches.

    recorder.submit(log)        # from a request: a list append, no I/O
    await recorder.run()        # lifespan task: one store transaction per batch
    recorder.stop(); await recorder.drain()   # at shutdown: everything submitted reaches the store

A batch that the store refuses stays in the buffer and is retried; when the
buffer is full the oldest records go first and are counted (``dropped``), so a
store outage cannot exhaust the worker's memory. A clean shutdown waits for
the buffer to empty (up to ``drain``'s timeout).
"""

from __future__ import annotations

import asyncio
from collections import deque

from loguru import logger

from .store import RequestLog, Store


class Recorder:
    def __init__(self, store: Store, *, batch_size: int = 500, interval: float = 0.5, max_buffer: int = 100_000):
        self.store = store
        self.batch_size = batch_size
        self.interval = interval
        self.max_buffer = max_buffer
        self.buffer: deque[RequestLog] = deque()
        self.written = 0
        self.dropped = 0
        self._wake = asyncio.Event()
        self._stopping = False

    def stop(self) -> None:
        """Let ``run`` finish the batch it is writing and return (cancelling it could write a batch twice)."""
        self._stopping = True
        self._wake.set()

    def submit(self, log: RequestLog) -> None:
        if len(self.buffer) >= self.max_buffer:
            self.buffer.popleft()
            self.dropped += 1
        self.buffer.append(log)
        if len(self.buffer) >= self.batch_size:
            self._wake.set()

    async def flush_once(self) -> int:
        batch = [self.buffer[i] for i in range(min(self.batch_size, len(self.buffer)))]
        if not batch:
            return 0
        await self.store.record(batch)
        for log in batch:  # drops during the write took from the left too: remove only what is still there
            if self.buffer and self.buffer[0] is log:
                self.buffer.popleft()
        self.written += len(batch)
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
            except Exception as exc:  # the store is down or refused the batch: keep it, retry later
                backoff = min(max(backoff * 2, 0.5), 10.0)
                logger.warning("usage/log write failed, {} records kept, retry in {:.1f}s: {}",
                               len(self.buffer), backoff, type(exc).__name__)

    async def drain(self, timeout: float = 10.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while self.buffer:
                    try:
                        await self.flush_once()
                    except Exception as exc:
                        logger.warning("usage/log write failed at shutdown ({}); retrying", type(exc).__name__)
                        await asyncio.sleep(0.5)
        except TimeoutError:
            logger.error("{} request logs not written at shutdown", len(self.buffer))

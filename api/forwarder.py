"""Forward what miners answered to the validator, in batches, off the request path.

Requests only append to a bounded buffer. A background loop sends batches to
the validator's signed ``POST /scoring`` and keeps them when the validator is
down, retrying with backoff; when the buffer is full the oldest items go
first and are counted. Each item carries a unique ``request_id``, so a batch
resent after a lost reply is stored once.
"""

from __future__ import annotations

import asyncio
from collections import deque

from loguru import logger

from shared.schemas import ScoringItem
from shared.signed_http import SignedCallError, SignedClient


class ScoringForwarder:
    def __init__(self, client: SignedClient, validator_url: str, validator_hotkey: str, *, batch_size: int,
                 interval: float, max_buffer: int):
        self.client = client
        self.validator_url = validator_url
        self.validator_hotkey = validator_hotkey
        self.batch_size = batch_size
        self.interval = interval
        self.buffer: deque[ScoringItem] = deque()
        self.max_buffer = max_buffer
        self.sent = 0
        self.dropped = 0
        self._wake = asyncio.Event()

    def submit(self, item: ScoringItem) -> None:
        if len(self.buffer) >= self.max_buffer:
            self.buffer.popleft()
            self.dropped += 1
        self.buffer.append(item)
        if len(self.buffer) >= self.batch_size:
            self._wake.set()

    async def flush_once(self) -> int:
        """Send one batch; returns how many items left the buffer."""
        batch = [self.buffer[i] for i in range(min(self.batch_size, len(self.buffer)))]
        if not batch:
            return 0
        payload = b'{"items":[' + b",".join(item.model_dump_json().encode() for item in batch) + b"]}"
        await self.client.post_json(self.validator_url, "/scoring", payload, receiver=self.validator_hotkey,
                                    timeout=10.0)
        for item in batch:  # drops during the send took from the left too: remove only what is still there
            if self.buffer and self.buffer[0] is item:
                self.buffer.popleft()
        self.sent += len(batch)
        return len(batch)

    async def run(self) -> None:
        backoff = self.interval
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                while await self.flush_once() == self.batch_size:
                    pass
                backoff = self.interval
            except SignedCallError as exc:
                backoff = min(max(backoff * 2, 0.5), 5.0)
                logger.warning("scoring forward failed, {} items kept, retry in {:.1f}s: {}",
                               len(self.buffer), backoff, exc)

    async def drain(self, timeout: float) -> None:
        """Best-effort final flush at shutdown."""
        try:
            async with asyncio.timeout(timeout):
                while self.buffer and await self.flush_once():
                    pass
        except (TimeoutError, SignedCallError):
            logger.warning("{} scoring items not forwarded at shutdown", len(self.buffer))

"""Fan out to miners with replacement: the one loop under the chat race, mixture rounds' steps and web retrieval.

    fan = FanOut(candidates, start=launch, signal=lambda call: call.first, width=3, max_attempts=6, started=calls)
    fan.start()
    while fan.running:
        for call in await fan.settled():          # what finished since the last look, oldest first
            if failed(call):
                fan.replace()                      # the next candidate, while attempts (and time) remain

``width`` candidates start together; each started thing (a ``MinerCall``, or a task) is appended to
``started``, so whoever called sees every miner asked, losers and failures included. ``signal(x)`` is the
awaitable that says ``x`` has something to judge (a call's first commit, a call's end, a task's result);
the caller decides what counts as a failure and asks for a replacement. A replacement starts only while
candidates are left, fewer than ``max_attempts`` were started, and, with a ``deadline``, at least
``margin`` seconds remain. What the three users differ in stays with them: the race's preference for a
better-rated racer (``api.race``), the whole answers of a reasoning step (``api.rounds``), the pages of web
retrieval (``api.web_retrieval``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Generic, Optional, TypeVar

from shared.schemas import MinerRecord

T = TypeVar("T")


class FanOut(Generic[T]):
    def __init__(self, candidates: list[MinerRecord], *, start: Callable[[MinerRecord], T],
                 signal: Callable[[T], Awaitable], width: int, max_attempts: int, started: list,
                 deadline: Optional[float] = None, margin: float = 0.0):
        self.waiting = list(candidates)
        self.launch = start
        self.signal = signal
        self.width = width
        self.max_attempts = max_attempts
        self.started = started
        self.deadline = deadline  # time.monotonic() after which no replacement starts
        self.margin = margin
        self.running: dict[Awaitable, T] = {}  # signal → what it signals for, still undecided

    def start(self) -> None:
        for _ in range(min(self.width, len(self.waiting))):
            self._start_next()

    def _start_next(self) -> None:
        item = self.launch(self.waiting.pop(0))
        self.started.append(item)
        self.running[self.signal(item)] = item

    def replace(self) -> bool:
        """Start the next candidate if one is left, attempts remain and there is time; whether it did."""
        if not self.waiting or len(self.started) >= self.max_attempts:
            return False
        if self.deadline is not None and self.deadline - time.monotonic() <= self.margin:
            return False
        self._start_next()
        return True

    def remaining(self) -> Optional[float]:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    async def settled(self, timeout: Optional[float] = None) -> list[T]:
        """Wait until at least one running signal resolves (or ``timeout``: then []); those, taken out."""
        done, _ = await asyncio.wait(self.running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return [self.running.pop(signal) for signal in done]

"""Bookkeeping kept for a moment when the worker would otherwise sit waiting for a miner.

    backlog = Backlog(max_delay=0.02)
    backlog.add(job, *args)       # after a response: its log and scoring item (api.meter.settle)
    backlog.run_soon()            # the chat core, having just sent a request to a miner
    backlog.close()               # at shutdown: what is left runs now

A response's bookkeeping (the request's log, its metrics, the scoring item for the validator) is work
the client does not wait for, but at one request at a time the next request does: it arrives while the
worker is still busy with the last one's books. The same worker is idle a little later, each time it has
sent a request to a miner and waits for the answer (a few hundred µs at least). So the chat core asks for
the backlog to run right after it has started a miner call; the call's first step (the request written
to the miner's socket) was scheduled before, so the books are done while the miner works. Side by side
at one request at a time, that served 5-10% more whole answers per second (docs/performance.md,
"Round 9").

When no chat request comes to make room, the backlog runs after ``max_delay`` seconds, so a log never
waits longer than that for its turn. A job that fails is logged and does not stop the jobs after it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

from loguru import logger

from shared.lazy_deadline import LazyDeadline


class Backlog:
    def __init__(self, max_delay: float = 0.02):
        self.max_delay = max_delay
        self._jobs: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        # The delay bound, set by the first job after a run, on one lazy loop timer that stays armed when the
        # backlog runs sooner: one request after another, a timer armed and cancelled for every response cost
        # the worker more than the books it was there for.
        self._deadline: Optional[LazyDeadline] = None
        self._soon: Optional[asyncio.Handle] = None
        self._running = False

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job: Callable[..., None], *args: Any) -> None:
        """``job(*args)`` at the next ``run_soon``, or in ``max_delay`` seconds at the latest."""
        self._jobs.append((job, args))
        deadline = self._deadline
        if deadline is None:
            deadline = self._deadline = LazyDeadline(asyncio.get_running_loop(), self.run)
        if deadline.when is None:
            deadline.set(self.max_delay)

    def run_soon(self) -> None:
        """Run the backlog on the loop's next turn: after what this turn has scheduled (a miner call's send)."""
        if self._jobs and self._soon is None and not self._running:
            self._soon = asyncio.get_running_loop().call_soon(self.run)

    def run(self) -> None:
        """Every job queued, in order; jobs they add run too."""
        if self._soon is not None:
            self._soon.cancel()  # a no-op when this is the call it scheduled
            self._soon = None
        self._running = True
        try:
            while self._jobs:
                jobs, self._jobs = self._jobs, []
                for job, args in jobs:
                    try:
                        job(*args)
                    except Exception:
                        logger.exception("bookkeeping after a response failed")
        finally:
            self._running = False
            if self._deadline is not None:
                self._deadline.clear()  # nothing waits now; the timer, if armed, finds that when it fires

    def close(self) -> None:
        """At shutdown: run what is left and disarm the timer."""
        self.run()
        if self._deadline is not None:
            self._deadline.stop()

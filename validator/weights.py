"""Set weights from the scores on a schedule, through the chain interface.

Every ``WEIGHTS_INTERVAL_SECONDS`` the normalised scores go to
``chain.set_weights``. A rate-limited attempt is retried when the chain says
it may be (or after ``RETRY_SECONDS``), not dropped until the next interval;
any other failure is logged and retried at the next interval. Each step logs a
compact score table.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict
from typing import Optional

from loguru import logger

from shared.chain import Chain, WeightResult

from .scores import ScoreBook

RETRY_SECONDS = 12.0


def score_table(book: ScoreBook, weights: dict[int, float]) -> str:
    rows = sorted(book.table(), key=lambda r: -r["score"])
    lines = ["uid  score     weight  rewards  hotkey"]
    for row in rows[:32]:
        lines.append(f"{row['uid']:>3}  {row['score']:>8.4f}  {weights.get(row['uid'], 0.0):>6.3f}  "
                     f"{row['rewards']:>7}  {row['hotkey'][:10]}…")
    if len(rows) > 32:
        lines.append(f"… and {len(rows) - 32} more")
    return "\n".join(lines)


class WeightSetter:
    def __init__(self, chain: Chain, book: ScoreBook, interval: float):
        self.chain = chain
        self.book = book
        self.interval = interval
        self.last: Optional[dict] = None
        self.steps = 0
        self.outcomes: Counter[str] = Counter()  # set, rate_limited, failed, error, skipped (metrics)
        self.next_delay = interval  # seconds until the next attempt; shorter after a rate limit

    async def step(self) -> Optional[WeightResult]:
        """One weight set; returns None when there is nothing to set yet."""
        self.next_delay = self.interval
        weights = self.book.weights()
        if not weights:
            self.outcomes["skipped"] += 1
            logger.info("no miner has a positive score yet: no weights set")
            return None
        result = await self.chain.set_weights(weights)
        self.steps += 1
        self.outcomes["set" if result.success else "rate_limited" if result.rate_limited else "failed"] += 1
        self.last = {"at": time.time(), "weights": {str(k): v for k, v in weights.items()}, **asdict(result)}
        level = "INFO" if result.success else "WARNING"
        logger.log(level, "weight step {}: {} ({} uids)\n{}", self.steps,
                   "set" if result.success else f"not set: {result.message}", len(weights),
                   score_table(self.book, weights))
        if result.rate_limited:
            wait = result.retry_after_seconds
            self.next_delay = wait + 0.5 if wait is not None else RETRY_SECONDS
            logger.info("rate limited: retrying in {:.0f}s", self.next_delay)
        return result

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.next_delay)
            try:
                await self.step()
            except Exception:
                self.outcomes["error"] += 1
                logger.exception("weight step failed")

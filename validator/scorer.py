"""Score what waits in the queue, once, and keep the moving averages.

Each pass takes a batch of unscored items (organic and synthetic alike),
judges them (``validator.rewards``) off the event loop, and — in one
transaction — saves the changed scores and marks the items scored. An item is
therefore scored exactly once, even across a crash.

- Synthetic rewards go into the task's moving average (``validator.scores``).
  A caught miner (copy, relabel, junk, gamed web results) restarts every task
  average at ``-penalty``: one catch outweighs the rewards in between.
- Organic rewards only feed the bounded organic factor (``validator.organic``),
  and only for tasks and models the miner advertises (``advertises``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Optional

from loguru import logger

from shared.schemas import ScoringItem

from .database import Database
from .exact_check import BuiltinAnswers
from .logprob_check import ReferenceModel
from .organic import OrganicEvidence
from .rewards import Rules, judge_item
from .scores import ScoreBook
from .scoring_queue import ScoringQueue
from .web_retrieval_reward import WebJudge

KEEP_SCORED_ITEMS = 50_000
Advertises = Callable[[int, str, Optional[str]], bool]  # (uid, task, model) → does the miner say it serves it?


class Scorer:
    def __init__(self, database: Database, queue: ScoringQueue, book: ScoreBook, *, rules: Optional[Rules] = None,
                 batch_size: int = 200, web: Optional[WebJudge] = None, reference: Optional[ReferenceModel] = None,
                 organic: Optional[OrganicEvidence] = None, advertises: Optional[Advertises] = None):
        self.database = database
        self.queue = queue
        self.book = book
        self.rules = rules or Rules()
        self.batch_size = batch_size
        self.web = web  # fetches and judges the pages that web retrieval results name
        self.reference = reference  # checks answers from real models, when configured
        self.organic = organic  # without it, organic items are scored like synthetic ones but never caught
        self.advertises = advertises
        self.answers = BuiltinAnswers()  # repeated organic requests are not re-derived
        self.passes = 0

    def score_item(self, item: ScoringItem) -> set[int]:
        """Judge one item and blend it into the book; returns the uids whose scores changed."""
        judgement = judge_item(item, self.rules, answers=self.answers, web=self.web, reference=self.reference)
        hotkeys = {r.uid: r.hotkey for r in item.responses}
        changed: set[int] = set()
        if item.source == "organic" and self.organic is not None:
            now = time.time()
            for uid, reward in judgement.rewards.items():
                model = item.request_for(uid).model
                if self.advertises is not None and not self.advertises(uid, item.task, model):
                    continue  # a client pinned this miner to something it never offered
                factor = self.organic.add(uid, hotkeys[uid], item.key_id, reward, now)
                if factor is not None:
                    changed.update(self.book.set_organic_factor(uid, hotkeys[uid], factor))
            return changed
        fair = {uid: (hotkeys[uid], reward) for uid, reward in judgement.rewards.items() if uid not in judgement.caught}
        changed.update(self.book.apply(fair, item.task))
        if judgement.caught:
            for uid, why in sorted(judgement.caught.items()):
                logger.info("caught uid {} in {} item {}: {}", uid, item.task, item.request_id, why)
            changed.update(self.book.restart({uid: hotkeys[uid] for uid in judgement.caught}, -self.rules.penalty))
        return changed

    def score_batch(self) -> int:
        """Score up to one batch; returns how many items it scored."""
        batch = self.queue.take(self.batch_size)
        if not batch:
            return 0
        changed: set[int] = set()
        for _, item in batch:
            changed.update(self.score_item(item))
        with self.database.transaction() as db:
            self.book.save(db, sorted(changed))
            if self.organic is not None:
                self.organic.save(db, sorted(changed))
            self.queue.mark_scored(db, [row_id for row_id, _ in batch])
        self.passes += 1
        if self.passes % 500 == 0:
            self.queue.prune_scored(KEEP_SCORED_ITEMS)
        return len(batch)

    async def run(self, metagraph, idle_seconds: float = 0.5) -> None:
        while True:
            try:
                if metagraph.state is not None:
                    reset = self.book.align(metagraph.state)
                    if reset:
                        for uid in reset:
                            if self.organic is not None:
                                self.organic.reset(uid)
                        with self.database.transaction() as db:
                            self.book.save(db, reset)
                            if self.organic is not None:
                                self.organic.save(db, reset)
                        logger.info("hotkeys changed at uids {}: their scores start from zero", reset)
                scored = await asyncio.to_thread(self.score_batch)
            except Exception:
                logger.exception("scoring pass failed")
                scored = 0
            if scored < self.batch_size:
                await asyncio.sleep(idle_seconds)

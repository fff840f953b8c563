"""Score what waits in the queue, once, and keep the moving averages.

Each pass takes a batch of unscored items (organic and synthetic alike),
computes their rewards off the event loop, blends them into the score book,
and — in one transaction — saves the changed scores and marks the items
scored. An item is therefore scored exactly once, even across a crash.
"""

from __future__ import annotations

import asyncio
from typing import Optional

from loguru import logger

from shared.corpus import Corpus
from shared.web_check import PageFetcher

from .database import Database
from .logprob_check import ReferenceModel
from .rewards import COPY_MARGIN_SECONDS, BuiltinAnswers, find_copies, reward_item
from .scores import ScoreBook
from .scoring_queue import ScoringQueue

KEEP_SCORED_ITEMS = 50_000


class Scorer:
    def __init__(self, database: Database, queue: ScoringQueue, book: ScoreBook, *, timeout: float,
                 copycat_penalty: float, copy_margin: float = COPY_MARGIN_SECONDS, batch_size: int = 200,
                 web: Optional[PageFetcher] = None, reference: Optional[ReferenceModel] = None):
        self.database = database
        self.queue = queue
        self.book = book
        self.timeout = timeout
        self.copycat_penalty = copycat_penalty
        self.copy_margin = copy_margin
        self.batch_size = batch_size
        self.corpus = Corpus.load()
        self.web = web  # fetches the pages that web retrieval results name
        self.reference = reference  # checks answers from real models, when configured
        self.answers = BuiltinAnswers()  # repeated organic requests are not re-derived
        self.passes = 0

    def score_batch(self) -> int:
        """Score up to one batch; returns how many items it scored."""
        batch = self.queue.take(self.batch_size)
        if not batch:
            return 0
        changed: set[int] = set()
        for _, item in batch:
            copies = find_copies(item, self.copy_margin)
            rewards = reward_item(item, timeout=self.timeout, copycat_penalty=self.copycat_penalty,
                                  corpus=self.corpus, web=self.web, reference=self.reference,
                                  answers=self.answers, copies=copies)
            hotkeys = {r.uid: r.hotkey for r in item.responses}
            changed.update(self.book.apply({uid: (hotkeys[uid], reward) for uid, reward in rewards.items()
                                            if uid not in copies.copied}))
            if copies.copied:
                logger.info("copy-cat caught in {} item {}: uids {} repeated an earlier answer", item.task,
                            item.request_id, sorted(copies.copied))
            changed.update(self.book.restart({uid: hotkeys[uid] for uid in copies.copied}, -self.copycat_penalty))
        with self.database.transaction() as db:
            self.book.save(db, sorted(changed))
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
                        with self.database.transaction() as db:
                            self.book.save(db, reset)
                        logger.info("hotkeys changed at uids {}: their scores start from zero", reset)
                scored = await asyncio.to_thread(self.score_batch)
            except Exception:
                logger.exception("scoring pass failed")
                scored = 0
            if scored < self.batch_size:
                await asyncio.sleep(idle_seconds)

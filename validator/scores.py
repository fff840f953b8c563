"""Each miner's moving-average score: numpy arrays in memory, one row per uid on disk.

    book = ScoreBook(database, alpha=0.1)      # reloads what a previous run saved
    book.align(state)                          # a uid with a new hotkey starts from zero
    changed = book.apply({3: ("5F…", 0.92)})   # EMA per uid; rewards for a stale hotkey are ignored
    book.save(db, changed)                     # inside the transaction that marks the items scored
    book.weights()                             # {uid: w}, non-negative, summing to 1

The subnet's own validator lost vtrust when it forgot its scores on restart;
this one reloads them, and resets only what the chain says changed hands.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Optional

import numpy as np

from shared.chain import SubnetState

from .database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    uid INTEGER PRIMARY KEY,
    hotkey TEXT NOT NULL,
    score REAL NOT NULL,
    rewards INTEGER NOT NULL,
    last_reward REAL,
    updated_at REAL NOT NULL
);
"""
FEW_UIDS = 16  # up to this many rewards at once (one item's miners) are blended one by one, more as arrays


class ScoreBook:
    def __init__(self, database: Database, alpha: float):
        if not 0 < alpha <= 1:
            raise ValueError("SCORE_ALPHA must be in (0, 1]")
        self.alpha = alpha
        self.scores = np.zeros(0, dtype=np.float64)
        self.rewards = np.zeros(0, dtype=np.int64)
        self.last_reward = np.full(0, np.nan)
        self.hotkeys: list[Optional[str]] = []
        database.executescript(SCHEMA)
        with database.reading() as db:
            for uid, hotkey, score, rewards, last in db.execute(
                "SELECT uid, hotkey, score, rewards, last_reward FROM scores"
            ):
                self._ensure(uid + 1)
                self.hotkeys[uid] = hotkey
                self.scores[uid], self.rewards[uid] = score, rewards
                self.last_reward[uid] = np.nan if last is None else last

    def _ensure(self, size: int) -> None:
        grow = size - len(self.scores)
        if grow > 0:
            self.scores = np.concatenate([self.scores, np.zeros(grow)])
            self.rewards = np.concatenate([self.rewards, np.zeros(grow, dtype=np.int64)])
            self.last_reward = np.concatenate([self.last_reward, np.full(grow, np.nan)])
            self.hotkeys.extend([None] * grow)

    def _reset(self, uid: int, hotkey: Optional[str]) -> None:
        self.hotkeys[uid] = hotkey
        self.scores[uid], self.rewards[uid], self.last_reward[uid] = 0.0, 0, np.nan

    def align(self, state: SubnetState) -> list[int]:
        """Follow the metagraph: uids whose hotkey changed start from zero. Returns them."""
        self._ensure(max((n.uid for n in state.neurons), default=-1) + 1)
        current = {n.uid: n.hotkey for n in state.neurons}
        reset = []
        for uid, known in enumerate(self.hotkeys):
            hotkey = current.get(uid)
            if known is not None and known != hotkey:
                self._reset(uid, hotkey)
                reset.append(uid)
        return reset

    def apply(self, rewards: dict[int, tuple[str, float]]) -> list[int]:
        """Blend one item's rewards in; a reward for a hotkey that no longer holds its uid is dropped."""
        fresh = {}
        for uid, (hotkey, reward) in rewards.items():
            self._ensure(uid + 1)
            known = self.hotkeys[uid]
            if known is None:
                self.hotkeys[uid] = hotkey
            elif known != hotkey:
                continue
            fresh[uid] = reward
        if len(fresh) > FEW_UIDS:
            uids = np.fromiter(fresh, dtype=np.int64, count=len(fresh))
            values = np.fromiter(fresh.values(), dtype=np.float64, count=len(fresh))
            self.scores[uids] = (1 - self.alpha) * self.scores[uids] + self.alpha * values
            self.rewards[uids] += 1
            self.last_reward[uids] = values
        else:  # one item's few miners: numpy's per-call overhead would cost more than the arithmetic
            for uid, value in fresh.items():
                self.scores[uid] = (1 - self.alpha) * float(self.scores[uid]) + self.alpha * value
                self.rewards[uid] += 1
                self.last_reward[uid] = value
        return list(fresh)

    def restart(self, caught: dict[int, str], score: float) -> list[int]:
        """Caught cheating: the moving average starts again from ``score`` (a stale hotkey is left alone).

        A copy-cat that also answers the tasks it cannot copy would otherwise
        average its penalties away; restarting makes each catch outweigh the
        rewards in between.
        """
        restarted = []
        for uid, hotkey in caught.items():
            self._ensure(uid + 1)
            if self.hotkeys[uid] not in (None, hotkey):
                continue
            self.hotkeys[uid] = hotkey
            self.scores[uid], self.last_reward[uid] = score, score
            self.rewards[uid] += 1
            restarted.append(uid)
        return restarted

    def save(self, db: sqlite3.Connection, uids: list[int]) -> None:
        now = time.time()
        db.executemany(
            "INSERT INTO scores (uid, hotkey, score, rewards, last_reward, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(uid) DO UPDATE SET hotkey = excluded.hotkey, score = excluded.score,"
            " rewards = excluded.rewards, last_reward = excluded.last_reward, updated_at = excluded.updated_at",
            [
                (uid, self.hotkeys[uid] or "", float(self.scores[uid]), int(self.rewards[uid]),
                 None if np.isnan(self.last_reward[uid]) else float(self.last_reward[uid]), now)
                for uid in uids
            ],
        )

    def weights(self) -> dict[int, float]:
        """Scores clipped at zero and normalised; empty when no miner has earned anything."""
        positive = np.clip(self.scores, 0.0, None)
        total = positive.sum()
        if total <= 0:
            return {}
        uids = np.flatnonzero(positive)
        return dict(zip(uids.tolist(), (positive[uids] / total).tolist()))

    def table(self) -> list[dict]:
        return [
            {
                "uid": uid,
                "hotkey": hotkey,
                "score": round(float(self.scores[uid]), 6),
                "rewards": int(self.rewards[uid]),
                "last_reward": None if np.isnan(self.last_reward[uid]) else round(float(self.last_reward[uid]), 4),
            }
            for uid, hotkey in enumerate(self.hotkeys)
            if hotkey is not None
        ]

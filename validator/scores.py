"""Each miner's moving-average scores: numpy arrays in memory, rows per uid on disk.

    book = ScoreBook(database, alpha=0.1, task_weights={"InferenceTask": 0.4, ...})   # reloads a previous run
    book.align(state)                          # a uid with a new hotkey starts from zero
    changed = book.apply({3: ("5F…", 0.92)}, task="InferenceTask")   # EMA per uid and task
    book.save(db, changed)                     # inside the transaction that marks the items scored
    book.restart({5: "5G…"}, -2.0)             # caught: every task restarts at -2, and probation begins
    book.weights()                             # {uid: w}, non-negative, summing to 1

A miner's score is the task-weighted sum of its per-task moving averages,
times its organic factor (``validator.organic``, 1 without organic evidence)::

    score[uid] = (Σ_task weight[task] × ema[uid, task]) × organic_factor[uid]

and capped at 0 while the miner advertises less than ``min_coverage`` of the
mix (by weight, among the tasks some miner serves; ``set_coverage`` after each
availability poll). The validator
sells the whole mix: a specialist that serves only the exactly verifiable task
would otherwise be paid for honest work on 40% of it and out-earn a miner
that tries everything; the cap keeps a caught cheat's negative score.

A caught miner is also on **probation** for ``probation_seconds`` from its
last catch: its score is capped at 0 the same way, whatever its averages do
meanwhile. Restarting the averages at the penalty makes one catch outweigh
the honest answers around it, but a cheat caught at some answers only (one
trick on one task) climbs back between catches and would be paid in the
gaps; held at 0 for longer than its catches are apart, it is paid nothing.
The end of the probation is saved with the scores, so a restart of the
validator does not lift it; a new hotkey on the uid (a new owner) starts
clean, as it starts from zero.

The task weights are fixed (the validator's task mix), so a miner is scored
on the whole mix it is asked for: a task it does not serve keeps its average
at 0, and cannot be left out of the sum. Without ``task_weights`` there is a
single channel and ``score`` is the plain moving average.

The subnet's own validator lost vtrust when it forgot its scores on restart;
this one reloads them, and resets only what the chain says changed hands.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Callable, Optional

import numpy as np

from shared.chain import SubnetState
from shared.sqlite import execute_many

from .database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    uid INTEGER PRIMARY KEY,
    hotkey TEXT NOT NULL,
    score REAL NOT NULL,
    rewards INTEGER NOT NULL,
    last_reward REAL,
    updated_at REAL NOT NULL,
    organic_factor REAL NOT NULL DEFAULT 1.0,
    probation_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS task_scores (
    uid INTEGER NOT NULL,
    task TEXT NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (uid, task)
);
"""
ALL_TASKS = "*"  # the single channel of a book without task weights
FEW_UIDS = 16  # up to this many rewards at once (one item's miners) are blended one by one, more as arrays


class ScoreBook:
    def __init__(self, database: Database, alpha: float, task_weights: Optional[dict[str, float]] = None,
                 min_coverage: float = 0.0, probation_seconds: float = 0.0,
                 clock: Callable[[], float] = time.time):
        if not 0 < alpha <= 1:
            raise ValueError("SCORE_ALPHA must be in (0, 1]")
        weights = {str(t): float(w) for t, w in (task_weights or {ALL_TASKS: 1.0}).items() if w > 0}
        if not weights:
            raise ValueError("the task weights must give some task a positive weight")
        total = sum(weights.values())
        if probation_seconds < 0:
            raise ValueError("PROBATION_SECONDS must not be negative")
        self.alpha = alpha
        self.min_coverage = min_coverage
        self.probation_seconds = probation_seconds
        self.clock = clock
        self.tasks = {task: column for column, task in enumerate(weights)}
        self.task_weights = np.array([w / total for w in weights.values()])
        self.task_scores = np.zeros((0, len(self.tasks)), dtype=np.float64)
        self.organic_factor = np.ones(0, dtype=np.float64)
        self.covered = np.ones(0, dtype=bool)  # advertises at least min_coverage of the mix (unknown: yes)
        self.probation_until = np.zeros(0, dtype=np.float64)  # epoch seconds; 0: not on probation
        self.scores = np.zeros(0, dtype=np.float64)
        self.rewards = np.zeros(0, dtype=np.int64)
        self.last_reward = np.full(0, np.nan)
        self.hotkeys: list[Optional[str]] = []
        database.executescript(SCHEMA)
        with database.reading() as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(scores)")}
        for column, declaration in (("organic_factor", "REAL NOT NULL DEFAULT 1.0"),  # books saved before these
                                    ("probation_until", "REAL NOT NULL DEFAULT 0")):
            if column not in columns:
                with database.transaction() as db:
                    db.execute(f"ALTER TABLE scores ADD COLUMN {column} {declaration}")
        with database.reading() as db:
            for uid, hotkey, score, rewards, last, factor, until in db.execute(
                "SELECT uid, hotkey, score, rewards, last_reward, organic_factor, probation_until FROM scores"
            ):
                self._ensure(uid + 1)
                self.hotkeys[uid] = hotkey
                self.scores[uid], self.rewards[uid], self.organic_factor[uid] = score, rewards, factor
                self.probation_until[uid] = until
                self.last_reward[uid] = np.nan if last is None else last
                self.task_scores[uid, :] = score / factor if factor else score  # until its task rows are read
            for uid, task, score in db.execute("SELECT uid, task, score FROM task_scores"):
                if task in self.tasks and uid < len(self.scores):
                    self.task_scores[uid, self.tasks[task]] = score
        self._end_probations()  # a saved score may hold a probation that has ended since (the coverage cap stays)

    def _ensure(self, size: int) -> None:
        grow = size - len(self.scores)
        if grow > 0:
            self.scores = np.concatenate([self.scores, np.zeros(grow)])
            self.task_scores = np.concatenate([self.task_scores, np.zeros((grow, len(self.tasks)))])
            self.organic_factor = np.concatenate([self.organic_factor, np.ones(grow)])
            self.covered = np.concatenate([self.covered, np.ones(grow, dtype=bool)])
            self.probation_until = np.concatenate([self.probation_until, np.zeros(grow)])
            self.rewards = np.concatenate([self.rewards, np.zeros(grow, dtype=np.int64)])
            self.last_reward = np.concatenate([self.last_reward, np.full(grow, np.nan)])
            self.hotkeys.extend([None] * grow)

    def _reset(self, uid: int, hotkey: Optional[str]) -> None:
        self.hotkeys[uid] = hotkey
        self.scores[uid], self.rewards[uid], self.last_reward[uid] = 0.0, 0, np.nan
        self.task_scores[uid, :] = 0.0
        self.organic_factor[uid] = 1.0
        self.covered[uid] = True
        self.probation_until[uid] = 0.0

    def column(self, task: Optional[str]) -> Optional[int]:
        """The task's column; a single-channel book takes every task, a weighted one only its own."""
        if ALL_TASKS in self.tasks:
            return 0
        return self.tasks.get(str(task)) if task is not None else None

    def _compose(self, uid: int) -> None:
        score = float(self.task_scores[uid] @ self.task_weights) * float(self.organic_factor[uid])
        self.scores[uid] = min(score, 0.0) if self._held(uid) else score

    def _held(self, uids: int | np.ndarray) -> np.bool_ | np.ndarray:
        """Whether each score is held at or below 0: below the coverage gate, or on probation (one uid or an
        array of them)."""
        return ~self.covered[uids] | (self.probation_until[uids] > self.clock())

    def on_probation(self, uid: int) -> bool:
        return uid < len(self.probation_until) and bool(self.probation_until[uid] > self.clock())

    def _end_probations(self) -> None:
        """Scores capped by a probation that has ended since are composed again (before they are read)."""
        ended = np.flatnonzero((self.probation_until > 0) & (self.probation_until <= self.clock()))
        for uid in ended.tolist():
            self.probation_until[uid] = 0.0  # in memory; the saved end is in the past, which reads the same
            self._compose(uid)

    def coverage(self, tasks: set[str]) -> float:
        """The share of the task mix (by weight) that ``tasks`` covers; 1 for a single-channel book."""
        if ALL_TASKS in self.tasks:
            return 1.0
        return float(sum(self.task_weights[column] for task, column in self.tasks.items() if task in tasks))

    def set_coverage(self, uid: int, hotkey: str, tasks: set[str], offered: set[str]) -> list[int]:
        """What the uid advertises (its last availability answer) against what any miner ``offered``
        (a task nobody serves is never asked, so it cannot be held against anyone); returns the uid if
        its score changed."""
        self._ensure(uid + 1)
        if self.hotkeys[uid] not in (None, hotkey):
            return []
        covered = self.coverage(tasks & offered) >= self.min_coverage * self.coverage(offered) - 1e-9
        if covered == bool(self.covered[uid]):
            return []
        self.hotkeys[uid] = hotkey
        self.covered[uid] = covered
        self._compose(uid)
        return [uid]

    def set_organic_factor(self, uid: int, hotkey: str, factor: float) -> list[int]:
        """The organic factor (``validator.organic``) of a uid whose hotkey still holds it."""
        self._ensure(uid + 1)
        if self.hotkeys[uid] not in (None, hotkey):
            return []
        self.hotkeys[uid] = hotkey
        self.organic_factor[uid] = factor
        self._compose(uid)
        return [uid]

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

    def apply(self, rewards: dict[int, tuple[str, float]], task: Optional[str] = None) -> list[int]:
        """Blend one item's rewards into ``task``'s averages; a reward for a stale hotkey (or a task outside the
        weights) is dropped."""
        column = self.column(task)
        if column is None:
            return []
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
            self.task_scores[uids, column] = (1 - self.alpha) * self.task_scores[uids, column] + self.alpha * values
            scores = (self.task_scores[uids] @ self.task_weights) * self.organic_factor[uids]
            self.scores[uids] = np.where(self._held(uids), np.minimum(scores, 0.0), scores)
            self.rewards[uids] += 1
            self.last_reward[uids] = values
        else:  # one item's few miners: numpy's per-call overhead would cost more than the arithmetic
            scores = self.task_scores
            for uid, value in fresh.items():
                scores[uid, column] = (1 - self.alpha) * float(scores[uid, column]) + self.alpha * value
                self._compose(uid)
                self.rewards[uid] += 1
                self.last_reward[uid] = value
        return list(fresh)

    def restart(self, caught: dict[int, str], score: float) -> list[int]:
        """Caught cheating: the moving average starts again from ``score`` and the probation from now (a stale
        hotkey is left alone).

        A copy-cat that also answers the tasks it cannot copy would otherwise
        average its penalties away; restarting makes each catch outweigh the
        rewards in between, and the probation keeps what it earns between
        catches from being paid.
        """
        restarted = []
        until = self.clock() + self.probation_seconds if self.probation_seconds > 0 else 0.0
        for uid, hotkey in caught.items():
            self._ensure(uid + 1)
            if self.hotkeys[uid] not in (None, hotkey):
                continue
            self.hotkeys[uid] = hotkey
            self.probation_until[uid] = max(float(self.probation_until[uid]), until)
            self.task_scores[uid, :] = score
            self._compose(uid)
            self.last_reward[uid] = score
            self.rewards[uid] += 1
            restarted.append(uid)
        return restarted

    def save(self, db: sqlite3.Connection, uids: list[int]) -> None:
        now = time.time()
        execute_many(
            db, "INSERT INTO scores (uid, hotkey, score, rewards, last_reward, updated_at, organic_factor,"
            " probation_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(uid) DO UPDATE SET hotkey = excluded.hotkey, score = excluded.score,"
            " rewards = excluded.rewards, last_reward = excluded.last_reward, updated_at = excluded.updated_at,"
            " organic_factor = excluded.organic_factor, probation_until = excluded.probation_until",
            [
                (uid, self.hotkeys[uid] or "", float(self.scores[uid]), int(self.rewards[uid]),
                 None if np.isnan(self.last_reward[uid]) else float(self.last_reward[uid]), now,
                 float(self.organic_factor[uid]), float(self.probation_until[uid]))
                for uid in uids
            ],
        )
        execute_many(
            db, "INSERT INTO task_scores (uid, task, score) VALUES (?, ?, ?)"
            " ON CONFLICT(uid, task) DO UPDATE SET score = excluded.score",
            [(uid, task, float(self.task_scores[uid, column])) for uid in uids for task, column in self.tasks.items()],
        )

    def weights(self) -> dict[int, float]:
        """Scores clipped at zero and normalised; empty when no miner has earned anything."""
        self._end_probations()
        positive = np.clip(self.scores, 0.0, None)
        total = positive.sum()
        if total <= 0:
            return {}
        uids = np.flatnonzero(positive)
        return dict(zip(uids.tolist(), (positive[uids] / total).tolist()))

    def table(self) -> list[dict]:
        self._end_probations()
        return [
            {
                "uid": uid,
                "hotkey": hotkey,
                "score": round(float(self.scores[uid]), 6),
                "rewards": int(self.rewards[uid]),
                "last_reward": None if np.isnan(self.last_reward[uid]) else round(float(self.last_reward[uid]), 4),
                "tasks": {task: round(float(self.task_scores[uid, column]), 4) for task, column in self.tasks.items()},
                "organic_factor": round(float(self.organic_factor[uid]), 4),
                "covers_mix": bool(self.covered[uid]),
                "probation_until": float(self.probation_until[uid]) or None,
            }
            for uid, hotkey in enumerate(self.hotkeys)
            if hotkey is not None
        ]

"""Organic evidence: what clients' own traffic may do to a miner's score, and no more.

Key holders steer organic requests (``uids``, ``task``, ``model``), so their
traffic must not be a lever on a miner's weight. Organic answers are judged
like synthetic ones (``validator.rewards``, never "caught"), and then only
nudge the score through a bounded factor::

    evidence = OrganicEvidence(database, bound=0.1, alpha=0.05, per_key_cap=20, per_miner_cap=200, window=60)
    factor = evidence.add(uid, hotkey, key_id, quality, now)   # None: over a cap, not counted
    book.set_organic_factor(uid, hotkey, factor)

- Per (miner, key): a moving average of the answers' quality, starting at 1.
- Per miner: ``factor = 1 - bound × (1 - mean over keys)``, in ``[1 - bound, 1]``.
  Organic evidence can only lower a score, by at most ``bound`` (a share of the
  synthetic score): weighted below synthetic evidence, and no key — nor all
  keys together — can move a miner more. It cannot raise one either, so a
  miner's owner gains nothing by sending itself traffic.
- Caps: at most ``per_key_cap`` items of one key and ``per_miner_cap`` items in
  all count for one miner per ``window`` seconds; the rest are ignored.
- Items whose key is unknown share one anonymous key.

The scorer also skips organic answers to a task or model the miner does not
advertise (a client pinned it with ``uids``): those are the API's mistake,
not the miner's.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Optional

from shared.sqlite import execute_many

from .database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS organic_evidence (
    uid INTEGER NOT NULL,
    hotkey TEXT NOT NULL,
    key_id TEXT NOT NULL,
    quality REAL NOT NULL,
    PRIMARY KEY (uid, key_id)
);
"""
ANONYMOUS = "-"


class OrganicEvidence:
    def __init__(self, database: Database, *, bound: float, alpha: float, per_key_cap: int, per_miner_cap: int,
                 window: float):
        if not 0 <= bound < 1:
            raise ValueError("ORGANIC_BOUND must be in [0, 1)")
        self.bound = bound
        self.alpha = alpha
        self.per_key_cap = per_key_cap
        self.per_miner_cap = per_miner_cap
        self.window = window
        self.quality: dict[int, dict[str, float]] = {}  # uid → key → moving average
        self.hotkeys: dict[int, str] = {}
        self.counted: Counter[tuple[int, str]] = Counter()  # this window's items per (uid, key) and (uid, "")
        self.window_started = 0.0
        database.executescript(SCHEMA)
        with database.reading() as db:
            for uid, hotkey, key, quality in db.execute("SELECT uid, hotkey, key_id, quality FROM organic_evidence"):
                self.quality.setdefault(uid, {})[key] = quality
                self.hotkeys[uid] = hotkey

    def factor(self, uid: int) -> float:
        keys = self.quality.get(uid)
        if not keys:
            return 1.0
        return 1.0 - self.bound * (1.0 - sum(keys.values()) / len(keys))

    def add(self, uid: int, hotkey: str, key_id: Optional[str], quality: float, now: float) -> Optional[float]:
        """Count one organic answer; the miner's new factor, or None when a cap says it does not count."""
        if now - self.window_started >= self.window:
            self.counted.clear()
            self.window_started = now
        key = key_id or ANONYMOUS
        if self.hotkeys.get(uid) not in (None, hotkey):
            self.reset(uid)
        if self.counted[(uid, key)] >= self.per_key_cap or self.counted[(uid, "")] >= self.per_miner_cap:
            return None
        self.counted[(uid, key)] += 1
        self.counted[(uid, "")] += 1
        self.hotkeys[uid] = hotkey
        keys = self.quality.setdefault(uid, {})
        keys[key] = (1 - self.alpha) * keys.get(key, 1.0) + self.alpha * min(1.0, max(0.0, quality))
        return self.factor(uid)

    def reset(self, uid: int) -> None:
        """A new hotkey at this uid: its evidence starts again."""
        self.quality.pop(uid, None)
        self.hotkeys.pop(uid, None)

    def save(self, db: sqlite3.Connection, uids: list[int]) -> None:
        db.executemany("DELETE FROM organic_evidence WHERE uid = ?", [(uid,) for uid in uids])
        execute_many(
            db, "INSERT INTO organic_evidence (uid, hotkey, key_id, quality) VALUES (?, ?, ?, ?)",
            [(uid, self.hotkeys[uid], key, quality) for uid in uids if uid in self.hotkeys
             for key, quality in self.quality.get(uid, {}).items()],
        )

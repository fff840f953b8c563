"""How many rounds of miner answers one API worker forwards for scoring: many times what the validator counts.

    budget = ForwardBudget(per_key=300, per_miner=3000, window=6.0)
    if budget.admit(uids, key_id, time.monotonic()):   # forward this round to the validator
        ...                                             # else it is logged as usual, not forwarded

The validator counts organic evidence in windows, at most ``ORGANIC_PER_KEY_CAP`` items of one key and
``ORGANIC_PER_MINER_CAP`` in all for one miner per ``ORGANIC_WINDOW_SECONDS`` (20 and 200 a minute by
default), and ignores the rest (``validator.organic``). A worker under load forwarded every round all the
same: at a thousand answers a second, all but a few hundred a minute were built, sent, parsed, stored and
judged only to be ignored, and that work, on the same cores as the chain, cost a tenth of the whole answers
served per second one request at a time (docs/performance.md, round 10).

So a worker stops forwarding a round once each of its miners has had ``per_key`` rounds of the round's
key, or ``per_miner`` rounds in all, in the current window. The defaults are 15 times the validator's caps
per window of 6 seconds, a tenth of the validator's: 150 times its caps per minute, so everything the
validator would count still reaches it (any minute of the validator's holds nine whole windows of this
worker's), and a flood's rounds go as a steady trickle. With one window as long as the validator's, the
first 3,000 rounds of a key went in the minute's first seconds, and the validator's intake of them
competed with the chain for the same cores. Per key as well as per miner: one key's flood fills its own
budget, and another key's rounds still go. A round with several miners goes while any of them is within
budget. Rounds without a key (a mixture's first round, web retrieval) count under one anonymous key, as at
the validator. ``0`` turns a limit off.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Optional

ANONYMOUS = "-"  # the validator's name for items without a key (validator.organic)


class ForwardBudget:
    def __init__(self, *, per_key: int, per_miner: int, window: float):
        self.per_key = per_key
        self.per_miner = per_miner
        self.window = window
        self.counted: Counter[tuple[int, str]] = Counter()  # this window's rounds per (uid, key) and (uid, "")
        self.window_started = 0.0
        self.refused = 0  # rounds not forwarded, since start

    def admit(self, uids: Iterable[int], key_id: Optional[str], now: float) -> bool:
        """Whether a round with these miners' answers goes to the validator; counted for those within budget."""
        if now - self.window_started >= self.window:
            self.counted.clear()  # bounded: one window's (miner, key) pairs
            self.window_started = now
        key = key_id or ANONYMOUS
        within = [uid for uid in uids if self._within(uid, key)]
        if not within:
            self.refused += 1
            return False
        for uid in within:
            self.counted[(uid, key)] += 1
            self.counted[(uid, "")] += 1
        return True

    def _within(self, uid: int, key: str) -> bool:
        return ((not self.per_key or self.counted[(uid, key)] < self.per_key)
                and (not self.per_miner or self.counted[(uid, "")] < self.per_miner))

"""Request ids that sort by time: ``new_id("chatcmpl")`` → ``chatcmpl-<32 hex>``.

The id is the primary key of the request logs (and of the validator's
scoring queue). A random id (uuid4) lands anywhere in those B-trees, so every
insert reads and dirties a random page; an id that grows with time is
appended at the right edge. On the request-log schema that halved the insert
cost (a measured 30 → 13.5 µs per request with its miner row, 60,000 rows,
SQLite) and keeps it flat as the table grows.

Layout, 32 hex digits: the time in microseconds (14), then 72 random bits
(18). The random part comes from a generator seeded from ``os.urandom`` in
each process (and again in a forked child): a system call per id would cost
more than the rest of the id, and a counter would tell clients how busy the
gateway is. Ids are unique, not secret: never use one as a token.
"""

from __future__ import annotations

import os
import random
import time

_random = random.Random(os.urandom(16))


def new_id(kind: str) -> str:
    return f"{kind}-{time.time_ns() // 1000:014x}{_random.getrandbits(72):018x}"


def reseed_after_fork() -> None:
    """A forked worker must not draw the same sequence as its parent."""
    _random.seed(os.urandom(16))


os.register_at_fork(after_in_child=reseed_after_fork)

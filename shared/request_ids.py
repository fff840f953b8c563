"""Request ids that sort by time: ``new_id("chatcmpl")`` → ``chatcmpl-<32 hex>``.

The id is the primary key of the request logs (and of the validator's
scoring queue). A random id (uuid4) lands anywhere in those B-trees, so every
insert reads and dirties a random page; an id that grows with time is
appended at the right edge. On the request-log schema that halved the insert
cost (a measured 30 → 13.5 µs per request with its miner row, 60,000 rows,
SQLite) and keeps it flat as the table grows.

Layout, 32 hex digits: the time in microseconds (14), this process's random
prefix (10, drawn once: 40 bits), a per-process counter (8). Two processes
collide only if they draw the same prefix and issue the same count in the
same microsecond. Nothing in the id is secret; do not use it as a token.
"""

from __future__ import annotations

import itertools
import os
import time

_PREFIX = os.urandom(5).hex()
_COUNTER = itertools.count()


def new_id(kind: str) -> str:
    return f"{kind}-{time.time_ns() // 1000:014x}{_PREFIX}{next(_COUNTER) & 0xFFFFFFFF:08x}"


def reseed_after_fork() -> None:
    """A forked worker draws its own prefix (a worker forked from another would otherwise share it)."""
    global _PREFIX, _COUNTER
    _PREFIX = os.urandom(5).hex()
    _COUNTER = itertools.count()


os.register_at_fork(after_in_child=reseed_after_fork)

"""Which miners a request goes to.

- ``uids``: exactly those (the client chose; unknown or unserved uids are a 400);
- ``top_n``: the N highest-incentive miners available for the task and model;
- default: a random sample from the ``top_pool`` highest-incentive available
  miners, so traffic spreads while better-rated miners get more of it.

The result is an ordered candidate list: the first ``fanout`` are queried at
once, the rest replace those that fail before their first byte.
"""

from __future__ import annotations

import random
from typing import Optional

from shared.schemas import Directory, MinerRecord

from .errors import ApiError


def current_directory(state) -> Directory:
    """The directory the worker routes by, or 503 while it has none."""
    if state.directory.directory is None:
        raise ApiError(503, "no miner directory yet: the validator has not answered", "directory_unavailable")
    return state.directory.directory


def available_for(directory: Directory, task: str, model: Optional[str]) -> list[MinerRecord]:
    return [
        m for m in directory.miners
        if m.address and m.availability is not None and m.availability.serves(task, model)
    ]


def select_candidates(
    directory: Directory,
    *,
    task: str,
    model: Optional[str],
    uids: Optional[list[int]],
    top_n: Optional[int],
    top_pool: int,
    rng: random.Random,
) -> tuple[list[MinerRecord], int]:
    """Returns (candidates in order, how many to query at once; 0 means the caller's fanout)."""
    if uids is not None:
        by_uid = {m.uid: m for m in directory.miners}
        missing = [uid for uid in uids if uid not in by_uid]
        if missing:
            raise ApiError(400, f"uids not on the subnet: {missing}", "unknown_uids")
        unserved = [uid for uid in uids if not by_uid[uid].address]
        if unserved:
            raise ApiError(400, f"uids that serve no address: {unserved}", "unserved_uids")
        return [by_uid[uid] for uid in uids], len(uids)

    pool = available_for(directory, task, model)
    if not pool:
        if model is not None and available_for(directory, task, None):
            raise ApiError(404, f"no available miner serves model {model!r} for {task}", "model_not_found")
        raise ApiError(503, f"no miner is available for {task} right now", "no_miners_available")
    pool.sort(key=lambda m: m.incentive, reverse=True)
    if top_n is not None:
        return pool[:top_n], min(top_n, len(pool))
    head = pool[:top_pool]
    rng.shuffle(head)
    return head + pool[top_pool:], 0

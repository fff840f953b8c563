"""Which miners a request goes to.

- ``uids``: exactly those (the client chose; unknown or unserved uids are a
  400, and so is a pinned miner that does not advertise the task or model:
  ``miner_does_not_serve``, before any miner is called, so a key holder cannot
  get an honest miner scored on work it never offered);
- ``top_n``: the N best-rated miners available for the task and model (by the
  validator's score when the directory carries it, else by incentive);
- default, ``ROUTING_POLICY=rated``: by the validator's view, in
  ``api.routing`` (docs/routing.md); ``uniform``: the policy before it, a
  uniform sample of the ``top_pool`` highest-incentive available miners.

The result is an ordered candidate list: the first ``fanout`` are queried at
once, the rest replace those that fail before their first byte. A sample holds
at most ``MAX_CANDIDATES`` miners (no request tries more), drawn without
shuffling the whole pool.

What depends only on the directory (the miners by uid; per task and model,
the available ones by incentive) is computed once per directory, not per
request: on a 256-miner subnet that was 300 µs of every request.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Optional

from shared.schemas import Directory, MinerRecord

from .breaker import Breakers
from .errors import ApiError
from .routing import MAX_CANDIDATES, RoutingPolicy, memo_of, ranked, rated_candidates

if TYPE_CHECKING:
    from .gateway import Gateway


def current_directory(gateway: Gateway) -> Directory:
    """The directory the worker routes by, or 503 while it has none."""
    if gateway.directory.directory is None:
        raise ApiError(503, "no miner directory yet: the validator has not answered", "directory_unavailable")
    return gateway.directory.directory


def routing_memo(directory: Directory) -> dict:
    """Per-directory results (a directory is replaced, never changed, when the validator sends a new one)."""
    return memo_of(directory)


def available_for(directory: Directory, task: str, model: Optional[str]) -> list[MinerRecord]:
    """The miners available for ``task`` and ``model``, highest incentive first (shared: do not modify)."""
    memo = routing_memo(directory)
    pool = memo.get((task, model))
    if pool is None:
        pool = memo[(task, model)] = sorted(
            (m for m in directory.miners
             if m.address and m.availability is not None and m.availability.serves(task, model)),
            key=lambda m: m.incentive, reverse=True)
    return pool


def select_candidates(
    directory: Directory,
    *,
    task: str,
    model: Optional[str],
    uids: Optional[list[int]],
    top_n: Optional[int],
    top_pool: int,
    rng: random.Random,
    policy: Optional[RoutingPolicy] = None,
    breakers: Optional[Breakers] = None,
) -> tuple[list[MinerRecord], int]:
    """Returns (candidates in order, how many to query at once; 0 means the caller's fanout).

    Without a ``policy`` (or with ``mode="uniform"``) the default strategy is the uniform sample.
    """
    if uids is not None:
        by_uid = routing_memo(directory)["by_uid"]
        missing = [uid for uid in uids if uid not in by_uid]
        if missing:
            raise ApiError(400, f"uids not on the subnet: {missing}", "unknown_uids")
        unserved = [uid for uid in uids if not by_uid[uid].address]
        if unserved:
            raise ApiError(400, f"uids that serve no address: {unserved}", "unserved_uids")
        refuse_unadvertised([by_uid[uid] for uid in uids], task, model)
        return [by_uid[uid] for uid in uids], len(uids)

    pool = available_for(directory, task, model)
    if not pool:
        if model is not None and available_for(directory, task, None):
            raise ApiError(404, f"no available miner serves model {model!r} for {task}", "model_not_found")
        raise ApiError(503, f"no miner is available for {task} right now", "no_miners_available")
    rated = policy is not None and policy.mode == "rated"
    if top_n is not None:
        if rated:
            best = ranked(directory, pool, ("rated", task, model))[:top_n]
            return [m for _, m in best], min(top_n, len(pool))
        return pool[:top_n], min(top_n, len(pool))
    if rated:
        return rated_candidates(directory, pool, ("rated", task, model), policy, rng, breakers)
    head = pool[:top_pool]
    if len(head) >= MAX_CANDIDATES:
        return rng.sample(head, MAX_CANDIDATES), 0
    picked = rng.sample(head, len(head))
    return picked + pool[top_pool:top_pool + MAX_CANDIDATES - len(picked)], 0


def refuse_unadvertised(miners: list[MinerRecord], task: str, model: Optional[str]) -> None:
    """A client-pinned miner must advertise the task and model asked of it (issue #11: organic griefing)."""
    silent = [m.uid for m in miners if m.availability is None]
    if silent:
        raise ApiError(503, f"uids not available at the validator's last check: {silent}", "miners_unavailable")
    wrong = [m.uid for m in miners if not m.availability.serves(task, model)]
    if wrong:
        what = task if model is None else f"{task} with model {model!r}"
        raise ApiError(400, f"uids that do not advertise {what}: {wrong}", "miner_does_not_serve")

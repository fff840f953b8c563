"""The default strategy's routing by the validator's view of each miner (docs/routing.md).

    policy = RoutingPolicy.from_settings(settings)
    candidates, width = rated_candidates(directory, pool, policy, rng, blocked)    # via selection
    shadows = shadow_miners(directory, pool, candidates[:width], policy, rng, breakers)
    band = score_band(directory, pool, winner.miner)                               # for the metrics

- **Rating**: the validator's moving-average score from the directory
  (``MinerRecord.score``), clipped at 0; a directory without scores (an older
  validator) is rated by incentive instead.
- **The band**: the available miners, not blocked by their breaker, rated at
  least ``ROUTING_FLOOR`` × the best of them. Only they get organic traffic;
  when no miner has a rating yet, every available miner is in the band.
- **Sampling**: candidates are drawn from the band without replacement with
  probability proportional to ``rating ** ROUTING_SHARPNESS``
  (Efraimidis–Spirakis keys), at most ``TOP_POOL`` of the best-rated.
- **Race width**: ``min(FANOUT, band size)``, so the race is only among miners
  of comparable rating (all within the floor of the best); the fastest of them
  answers. The rest of the list (the other available miners by rating, then
  the blocked ones) only replaces miners that fail before the commit point.
- **Shadows**: with probability ``ROUTING_EXPLORATION`` one miner from outside
  the race is asked too, and a half-open breaker sends its probe the same way.
  A shadow's answer is forwarded for scoring like any organic answer but never
  reaches the client.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Optional

from shared.schemas import Directory, MinerRecord

from .breaker import Breakers

MAX_CANDIDATES = 48
BANDS = ("0.9-1", "0.5-0.9", "0-0.5", "0")  # served miner's rating / best available rating


@dataclass(frozen=True)
class RoutingPolicy:
    mode: str = "rated"  # "uniform": the policy before ratings (uniform sample of TOP_POOL, no band)
    fanout: int = 3
    top_pool: int = 400
    floor: float = 0.7
    sharpness: float = 2.0
    exploration: float = 0.05

    @classmethod
    def from_settings(cls, settings) -> "RoutingPolicy":
        return cls(mode=settings.routing_policy, fanout=settings.fanout, top_pool=settings.top_pool,
                   floor=settings.routing_floor, sharpness=settings.routing_sharpness,
                   exploration=settings.routing_exploration)


_last: tuple = (None, None)  # (the directory asked for last, its memo)


def memo_of(directory: Directory) -> dict:
    """Per-directory results (a directory is replaced, never changed, when the validator sends a new one).

    Kept on the directory (a private attribute); the last directory asked for is also kept here, with its
    memo, because reading a pydantic private attribute goes through ``BaseModel.__getattr__``: a few µs,
    several times a request. Only the event loop's thread routes.
    """
    global _last
    last, memo = _last
    if last is directory:
        return memo
    memo = directory._routing
    if memo is None:
        memo = directory._routing = {"by_uid": {m.uid: m for m in directory.miners}}
    _last = (directory, memo)
    return memo


def rating(directory: Directory, miner: MinerRecord) -> float:
    """What the routing ranks by: the validator's score when the directory carries scores, else incentive."""
    memo = memo_of(directory)
    uses_scores = memo.get("uses_scores")
    if uses_scores is None:
        uses_scores = memo["uses_scores"] = any(m.score is not None for m in directory.miners)
    value = (miner.score or 0.0) if uses_scores else miner.incentive
    return value if value > 0 else 0.0


def ranked(directory: Directory, pool: list[MinerRecord], key: tuple) -> list[tuple[float, MinerRecord]]:
    """``pool`` as (rating, miner), best first; memoised per directory under ``key``."""
    memo = memo_of(directory)
    found = memo.get(key)
    if found is None:
        found = memo[key] = sorted(((rating(directory, m), m) for m in pool), key=lambda rm: rm[0], reverse=True)
    return found


def rated_candidates(directory: Directory, pool: list[MinerRecord], key: tuple, policy: RoutingPolicy,
                     rng: random.Random, breakers: Optional[Breakers]) -> tuple[list[MinerRecord], int]:
    """(candidates in order, race width) for the default strategy."""
    blocked = breakers.blocked() if breakers is not None else {}
    # what follows depends on the directory and on who is blocked: kept until either changes
    band_key = ("band", key, breakers.seen_generation if blocked else 0)
    memo = memo_of(directory)
    found = memo.get(band_key)
    if found is None:
        if len(memo) > 1000:  # breaker generations come and go: a backstop against growth
            for stale in [k for k in memo if isinstance(k, tuple) and k and k[0] == "band"]:
                del memo[stale]
        found = memo[band_key] = band_of(ranked(directory, pool, key), blocked, breakers, policy)
    rows, open_rows, band, inverse = found
    picked = weighted_order(band, inverse, rng, MAX_CANDIDATES)
    width = min(policy.fanout, len(picked))
    if len(picked) < MAX_CANDIDATES:
        chosen = {id(m) for m in picked}
        rest = [m for _, m in rows if id(m) not in chosen][:MAX_CANDIDATES - len(picked)]
        picked += rest + [m for _, m in open_rows][:MAX_CANDIDATES - len(picked) - len(rest)]
    return picked, width


def band_of(rows: list[tuple[float, MinerRecord]], blocked: dict, breakers: Optional[Breakers],
            policy: RoutingPolicy) -> tuple[list, list, list[MinerRecord], list[float]]:
    """(rows not blocked, rows blocked, the band's miners, 1 / their sampling weights)."""
    open_rows = []
    if blocked:
        tag = breakers.tag
        open_rows = [(r, m) for r, m in rows if m.uid in blocked and blocked[m.uid][0] == tag(m.hotkey)]
        if open_rows:
            shut = {id(m) for _, m in open_rows}
            rows = [(r, m) for r, m in rows if id(m) not in shut]
        if not rows:  # every miner is blocked: try them anyway, best first, rather than refuse
            rows, open_rows = open_rows, []
    best = rows[0][0]
    if best > 0:
        cut = best * policy.floor
        band = [(r, m) for r, m in rows[:policy.top_pool] if r >= cut and r > 0]
        inverse = [1.0 / (r ** policy.sharpness) for r, _ in band]
    else:  # nobody rated yet: every available miner, alike
        band = rows[:policy.top_pool]
        inverse = [1.0] * len(band)
    return rows, open_rows, [m for _, m in band], inverse


def weighted_order(band: list[MinerRecord], inverse: list[float], rng: random.Random,
                   limit: int) -> list[MinerRecord]:
    """A sample without replacement, each draw in proportion to its weight w (Efraimidis–Spirakis: the
    largest keys u^(1/w), here log(u) / w)."""
    if len(band) == 1:
        return [band[0]]
    rand, log = rng.random, math.log
    keys = [log(rand() or 1e-300) * inv for inv in inverse]
    order = sorted(range(len(band)), key=keys.__getitem__, reverse=True)
    return [band[i] for i in order[:limit]]


def shadow_miners(directory: Directory, pool: list[MinerRecord], racing: list[MinerRecord], policy: RoutingPolicy,
                  rng: random.Random, breakers: Optional[Breakers]) -> list[MinerRecord]:
    """Miners asked alongside the race whose answers are scored but never served: a breaker's probe, exploration."""
    if policy.mode != "rated":
        return []
    shadows: list[MinerRecord] = []
    racing_ids = {m.uid for m in racing}
    if breakers is not None:
        blocked = breakers.blocked()
        if blocked:
            now = time.time()
            for miner in pool:
                if miner.uid in blocked and miner.uid not in racing_ids and breakers.probe_due(miner.uid, miner.hotkey,
                                                                                               now):
                    if breakers.claim_probe(miner.uid, miner.hotkey, now):
                        shadows.append(miner)
                        break
    if policy.exploration > 0 and rng.random() < policy.exploration:
        others = [m for m in pool if m.uid not in racing_ids and all(m.uid != s.uid for s in shadows)
                  and (breakers is None or not breakers.is_blocked(m.uid, m.hotkey))]
        if others:
            shadows.append(rng.choice(others))
    return shadows


def score_band(directory: Directory, pool: list[MinerRecord], key: tuple, miner: MinerRecord) -> tuple[str, float,
                                                                                                         float]:
    """(band, served rating, best rating among ``pool``) of the miner that answered."""
    rows = ranked(directory, pool, key)
    best = rows[0][0] if rows else 0.0
    value = rating(directory, miner)
    if value <= 0 or best <= 0:
        return "0", value, best
    share = value / best
    return ("0.9-1" if share >= 0.9 else "0.5-0.9" if share >= 0.5 else "0-0.5"), value, best

"""The worker's routing service: the policy, the host's breakers, and what routing reports.

    routing = Routing(settings, metrics)                  # in the lifespan (``api.gateway``); gateway.routing
    candidates, width = routing.select(directory, task=…, model=…, uids=…, top_n=…, rng=rng)
    shadows = routing.shadows(directory, task, model, candidates[:width], rng)
    call = routing.watch(MinerCall(miner, commit_chunks=routing.commit_chunks))   # outcome → breaker
    routing.served(directory, task, model, winner.miner)  # band and score of the answer a client got
    routing.close()
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Optional

from shared.schemas import Directory, MinerRecord

from .breaker import Breakers, Outcome
from .miner_call import MinerCall
from .race import Preference
from .routing import RoutingPolicy, rating, score_band, shadow_miners
from .selection import available_for, select_candidates


class Routing:
    def __init__(self, settings: Any, metrics: Any = None):
        self.policy = RoutingPolicy.from_settings(settings)
        self.rated = self.policy.mode == "rated"
        self.commit_chunks = settings.stream_commit_chunks if self.rated else 1
        self.metrics = metrics
        self.patience = settings.race_patience_seconds
        self.latency = CommitLatency()
        self.breakers: Optional[Breakers] = None
        if self.rated and settings.breaker_failures > 0:
            path = Path(settings.breaker_file or Path(settings.data_dir).expanduser() / "miner-breakers.bin")
            self.breakers = Breakers(path, failures=settings.breaker_failures,
                                     open_seconds=settings.breaker_open_seconds,
                                     max_open_seconds=settings.breaker_max_open_seconds,
                                     probe_seconds=settings.first_chunk_timeout + settings.miner_read_timeout)

    def close(self) -> None:
        if self.breakers is not None:
            self.breakers.close()

    def select(self, directory: Directory, *, task: str, model: Optional[str], uids, top_n,
               rng: random.Random) -> tuple[list[MinerRecord], int]:
        return select_candidates(directory, task=task, model=model, uids=uids, top_n=top_n,
                                 top_pool=self.policy.top_pool, rng=rng, policy=self.policy, breakers=self.breakers)

    def shadows(self, directory: Directory, task: str, model: Optional[str], racing: list[MinerRecord],
                rng: random.Random) -> list[MinerRecord]:
        if not self.rated:
            return []
        return shadow_miners(directory, available_for(directory, task, model), racing, self.policy, rng,
                             self.breakers)

    def watch(self, call: MinerCall) -> MinerCall:
        """Feed the call's commit latency to the history, its outcome to its miner's breaker and the metrics."""
        if call.task is not None:
            call.task.add_done_callback(lambda _: self.observe(call))
            if self.rated:
                call.first.add_done_callback(lambda first: self.latency.observe(call) if first.result() else None)
        return call

    def observe_ended(self, call: MinerCall) -> None:
        """What ``watch`` observes, for a call that ran in its caller's task (``api.race``'s lone racer)."""
        self.observe(call)
        if self.rated and call.first.done() and call.first.result() and call.elapsed is not None:
            self.latency.observe(call, call.elapsed)

    def preference(self, directory: Directory) -> Optional[Preference]:
        """How the race prefers better-rated miners (None: the first to commit wins, as in ``uniform``)."""
        if not self.rated or self.patience <= 0:
            return None
        return Preference(rating=lambda miner: rating(directory, miner), expected=self.latency.expected,
                          patience=self.patience)

    def observe(self, call: MinerCall) -> None:
        if call.status == "cancelled":
            return  # we stopped it (the client left): says nothing about the miner
        if call.status == "ok":
            outcome = Outcome.OK
        elif client_caused(call.error):
            return  # the miner refused what the client asked: a client must not open a miner's breaker
        else:
            outcome = Outcome.BROKE if call.content_chunks else Outcome.FAILED
            if self.metrics is not None and call.content_chunks:
                self.metrics.observe_break(call.content_chunks)
        if self.breakers is None:
            return
        transition = self.breakers.observe(call.miner.uid, call.miner.hotkey, outcome)
        if transition and self.metrics is not None:
            self.metrics.observe_breaker(transition)

    def served(self, directory: Directory, task: str, model: Optional[str], miner: MinerRecord) -> None:
        """A client got this miner's answer: count it in its score band."""
        if self.metrics is None:
            return
        pool = available_for(directory, task, model)
        band, value, best = score_band(directory, pool, ("rated", task, model), miner)
        self.metrics.observe_served(band, value, best)


def client_caused(error: Optional[str]) -> bool:
    """400, 413 or 422: the miner refused what was asked, not a sign of its health (401/403: it refuses us)."""
    return bool(error) and error.startswith(("HTTP 400", "HTTP 413", "HTTP 422"))


class CommitLatency:
    """Per miner, this worker's smoothed commit latency and its deviation (as TCP estimates round trips)."""

    def __init__(self) -> None:
        self.smoothed: dict[int, tuple[float, float]] = {}

    def observe(self, call: MinerCall, sample: Optional[float] = None) -> None:
        """``sample``: the commit latency, when it is not the time from the call's start to now."""
        if not call.record.started:
            return
        if sample is None:
            sample = time.monotonic() - call.record.started
        known = self.smoothed.get(call.miner.uid)
        if known is None:
            self.smoothed[call.miner.uid] = (sample, sample / 2)
            return
        mean, deviation = known
        deviation += (abs(sample - mean) - deviation) / 4
        mean += (sample - mean) / 8
        self.smoothed[call.miner.uid] = (mean, deviation)

    def expected(self, uid: int) -> Optional[float]:
        """An upper estimate of the miner's next commit latency (mean + 4 deviations); None before any."""
        known = self.smoothed.get(uid)
        return None if known is None else known[0] + 4 * known[1]

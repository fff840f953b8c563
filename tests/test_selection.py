"""Routing choices on a large directory: right miners, bounded samples, memo per directory."""

from __future__ import annotations

import random

import pytest

from api.errors import ApiError
from api.selection import MAX_CANDIDATES, available_for, select_candidates
from shared.schemas import Availability, Directory, MinerRecord

SERVES = Availability(task_availabilities={"InferenceTask": True}, llm_model_availabilities={"m1": True})


def directory(count: int, seed: int = 0) -> Directory:
    rng = random.Random(seed)
    miners = [MinerRecord(uid=uid, hotkey=f"hk{uid}", address=f"10.0.0.1:{9000 + uid}", incentive=rng.random(),
                          stake=1.0, availability=SERVES if uid % 4 else None)  # every 4th is unreachable
              for uid in range(count)]
    return Directory(netuid=1, block=1, validator_hotkey="v", generated_at=0.0, miners=miners)


def pick(d: Directory, **kwargs):
    options = dict(task="InferenceTask", model=None, uids=None, top_n=None, top_pool=400, rng=random.Random(1))
    return select_candidates(d, **{**options, **kwargs})


def test_a_sample_is_bounded_distinct_and_only_available_miners():
    d = directory(256)
    candidates, width = pick(d)
    assert width == 0 and len(candidates) == MAX_CANDIDATES
    assert len({m.uid for m in candidates}) == MAX_CANDIDATES and all(m.uid % 4 for m in candidates)
    small, _ = pick(directory(8))
    assert sorted(m.uid for m in small) == [1, 2, 3, 5, 6, 7]


def test_top_n_follows_incentive_and_the_pool_is_kept_per_directory():
    d = directory(256)
    best, width = pick(d, top_n=3)
    ranked = sorted((m for m in d.miners if m.uid % 4), key=lambda m: m.incentive, reverse=True)
    assert [m.uid for m in best] == [m.uid for m in ranked[:3]] and width == 3
    assert available_for(d, "InferenceTask", None) is available_for(d, "InferenceTask", None)
    other = directory(256, seed=7)  # the validator sent a new directory: ranked afresh
    assert [m.uid for m in pick(other, top_n=3)[0]] != [m.uid for m in best]


def test_uids_are_checked_against_the_directory():
    d = directory(16)
    chosen, width = pick(d, uids=[3, 5])
    assert [m.uid for m in chosen] == [3, 5] and width == 2
    with pytest.raises(ApiError) as refused:
        pick(d, uids=[3, 99])
    assert refused.value.status == 400 and refused.value.code == "unknown_uids"
    with pytest.raises(ApiError) as unknown_model:
        pick(d, model="m2")
    assert unknown_model.value.status == 404

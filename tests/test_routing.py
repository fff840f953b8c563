"""Routing by the validator's scores, the per-host breakers, and the commit point, without processes."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from api.breaker import Breakers, Outcome
from api.errors import ApiError
from api.miner_call import MinerCall
from api.routing import RoutingPolicy, score_band, shadow_miners
from api.routing_service import client_caused
from api.selection import available_for, select_candidates
from shared.schemas import Availability, Directory, MinerRecord

SERVES = Availability(task_availabilities={"InferenceTask": True}, llm_model_availabilities={"m1": True})
RATED = RoutingPolicy(mode="rated", fanout=3, floor=0.7, sharpness=2.0, exploration=0.0)


def directory(scores: dict[int, float | None], incentive: dict[int, float] | None = None) -> Directory:
    miners = [MinerRecord(uid=uid, hotkey=f"hk{uid}", address=f"10.0.0.1:{9000 + uid}",
                          incentive=(incentive or {}).get(uid, 0.1), stake=1.0, availability=SERVES, score=score)
              for uid, score in scores.items()]
    return Directory(netuid=1, block=1, validator_hotkey="v", generated_at=0.0, miners=miners)


def pick(d: Directory, policy=RATED, breakers=None, seed=1, **kwargs):
    options = dict(task="InferenceTask", model=None, uids=None, top_n=None, top_pool=400, rng=random.Random(seed),
                   policy=policy, breakers=breakers)
    return select_candidates(d, **{**options, **kwargs})


# the demo's five, as the validator rates them after a few weight steps
DEMO = {1: 0.90, 2: 0.22, 3: 0.83, 4: 0.0, 5: -2.0}  # good, noisy, slow, broken, copy-cat


def test_only_miners_near_the_best_race_and_the_rest_only_replace():
    d = directory(DEMO)
    for seed in range(200):
        candidates, width = pick(d, seed=seed)
        assert width == 2 and {m.uid for m in candidates[:2]} == {1, 3}
        assert [m.uid for m in candidates[2:]] == [2, 4, 5]  # by rating: replacements of failures only


def test_the_band_is_sampled_in_proportion_to_rating_squared():
    d = directory({1: 1.0, 2: 0.9, 3: 0.8, 4: 0.75, 5: 0.1})
    firsts = Counter(pick(d, policy=RoutingPolicy(fanout=1, exploration=0.0), seed=s)[0][0].uid
                     for s in range(4000))
    assert 5 not in firsts  # below 0.7 x best
    total = 1.0 + 0.81 + 0.64 + 0.5625
    for uid, rating in {1: 1.0, 2: 0.9, 3: 0.8, 4: 0.75}.items():
        assert firsts[uid] / 4000 == pytest.approx(rating ** 2 / total, abs=0.03)


def test_unrated_miners_share_alike_and_an_old_directory_routes_by_incentive():
    cold = directory({1: 0.0, 2: 0.0, 3: 0.0})
    assert Counter(pick(cold, policy=RoutingPolicy(fanout=1), seed=s)[0][0].uid for s in range(300)).keys() == {1, 2, 3}
    old = directory({1: None, 2: None, 3: None}, incentive={1: 0.1, 2: 0.6, 3: 0.5})
    candidates, width = pick(old)
    assert width == 2 and {m.uid for m in candidates[:2]} == {2, 3}
    assert [m.uid for m in pick(old, top_n=1)[0]] == [2]


def test_top_n_follows_the_validator_score():
    d = directory(DEMO, incentive={1: 0.1, 2: 0.9, 3: 0.1, 4: 0.1, 5: 0.1})
    assert [m.uid for m in pick(d, top_n=2)[0]] == [1, 3]
    assert [m.uid for m in pick(d, top_n=2, policy=None)[0]] == [2, 1]  # uniform: incentive, as before


def test_uniform_is_the_policy_before():
    d = directory(DEMO)
    seen = Counter(m.uid for s in range(300) for m in pick(d, policy=RoutingPolicy(mode="uniform"), seed=s)[0][:3])
    assert set(seen) == {1, 2, 3, 4, 5} and pick(d, policy=RoutingPolicy(mode="uniform"))[1] == 0


def test_a_pinned_miner_must_advertise_the_task_and_model():
    d = directory(DEMO)
    assert [m.uid for m in pick(d, uids=[2], model="m1")[0]] == [2]
    with pytest.raises(ApiError) as refused:
        pick(d, uids=[1, 2], model="not-served")
    assert refused.value.status == 400 and refused.value.code == "miner_does_not_serve"
    with pytest.raises(ApiError) as refused:
        pick(d, uids=[1], task="ProgrammingTask")
    assert refused.value.status == 400 and "ProgrammingTask" in refused.value.message


def test_breakers_are_shared_by_the_workers_of_a_host(tmp_path):
    path = tmp_path / "breakers.bin"
    one, two = (Breakers(path, failures=3, open_seconds=5, max_open_seconds=60, probe_seconds=10) for _ in range(2))
    now = 1000.0
    assert one.observe(7, "hk7", Outcome.FAILED, now) is None
    assert two.observe(7, "hk7", Outcome.FAILED, now) is None
    assert one.observe(7, "hk7", Outcome.FAILED, now) == "opened"  # three in a row, from either worker
    assert two.state(7, "hk7", now + 1) == "open" and two.is_blocked(7, "hk7")
    assert not two.is_blocked(7, "another hotkey")  # the uid changed hands: not this miner's breaker
    assert not one.claim_probe(7, "hk7", now + 1)  # still open
    assert one.state(7, "hk7", now + 5) == "half-open"
    assert two.claim_probe(7, "hk7", now + 5) and not one.claim_probe(7, "hk7", now + 5)  # one probe per host
    assert one.observe(7, "hk7", Outcome.FAILED, now + 6) == "opened"  # the probe failed: open again, for longer
    assert two.state(7, "hk7", now + 6 + 9) == "open" and two.state(7, "hk7", now + 6 + 10) == "half-open"
    assert two.claim_probe(7, "hk7", now + 17)
    assert two.observe(7, "hk7", Outcome.OK, now + 17) == "closed"
    assert not one.is_blocked(7, "hk7") and one.state(7, "hk7", now + 17) == "closed"
    assert one.observe(8, "hk8", Outcome.BROKE, now) == "opened"  # one mid-stream break is enough
    assert one.observe(9, "hk9", Outcome.FAILED, now) is None and one.observe(9, "hk9", Outcome.OK, now) is None
    assert one.observe(9, "hk9", Outcome.FAILED, now) is None  # a success in between: the count started again
    one.close()
    two.close()


def test_a_blocked_miner_leaves_the_band_and_its_probe_rides_as_a_shadow(tmp_path):
    breakers = Breakers(tmp_path / "b.bin", failures=1, open_seconds=0.05)
    d = directory(DEMO)
    breakers.observe(1, "hk1", Outcome.FAILED)
    candidates, width = pick(d, breakers=breakers)
    assert width == 1 and candidates[0].uid == 3 and candidates[-1].uid == 1  # last resort only
    pool = available_for(d, "InferenceTask", None)
    asyncio.run(asyncio.sleep(0.06))
    assert [m.uid for m in shadow_miners(d, pool, candidates[:1], RATED, random.Random(1), breakers)] == [1]
    assert shadow_miners(d, pool, candidates[:1], RATED, random.Random(1), breakers) == []  # claimed already
    explore = RoutingPolicy(exploration=1.0)
    shadows = shadow_miners(d, pool, candidates[:1], explore, random.Random(1), breakers)
    assert len(shadows) == 1 and shadows[0].uid in {2, 4, 5}
    breakers.close()


def test_served_answers_fall_in_score_bands():
    d = directory(DEMO)
    pool = available_for(d, "InferenceTask", None)
    bands = {uid: score_band(d, pool, ("rated", "InferenceTask", None), d.miners[uid - 1])[0] for uid in DEMO}
    assert bands == {1: "0.9-1", 2: "0-0.5", 3: "0.9-1", 4: "0", 5: "0"}


def test_a_stream_is_committed_only_after_the_commit_point():
    async def run() -> None:
        call = MinerCall(directory(DEMO).miners[0], commit_chunks=2)
        chunk = {"choices": [{"index": 0, "delta": {"content": "one "}}]}
        call._take({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        call._take(chunk)
        assert not call.first.done()  # a miner that breaks now is replaced, not served
        call._take(chunk)
        assert call.first.done() and call.first.result() is True

    asyncio.run(run())


def test_a_client_cannot_open_a_miners_breaker_with_requests_the_miner_refuses():
    assert client_caused("HTTP 400: max_new_tokens above the model's context")
    assert not client_caused("HTTP 429: busy") and not client_caused("HTTP 503: overloaded")
    assert not client_caused("HTTP 403: not a validator")
    assert not client_caused("ClientConnectorError: refused") and not client_caused(None)


def race_of(delays: dict[int, float | None], ratings: dict[int, float], expected: dict[int, float], patience: float):
    """(winner uid, uids still undecided when the race returned): uid commits after delays[uid] (None: never)."""
    from api.race import Preference, race

    miners = {m.uid: m for m in directory({uid: ratings[uid] for uid in delays}).miners}

    async def run():
        async def behave(call: MinerCall, delay):
            if delay is None:
                await asyncio.sleep(5)
                call._settle_first(False)
                return
            await asyncio.sleep(delay)
            call.record.timings.append(delay)
            call._settle_first(True)

        def launch(miner):
            call = MinerCall(miner)
            call.task = asyncio.create_task(behave(call, delays[miner.uid]))
            return call

        prefer = Preference(rating=lambda m: ratings[m.uid], expected=expected.get, patience=patience)
        calls = []
        winner = await race(list(miners.values()), fanout=len(miners), max_attempts=6, launch=launch, calls=calls,
                            prefer=prefer)
        undecided = {call.miner.uid for call in calls if not call.first.done()}
        for call in calls:
            call.task.cancel()
        return winner.miner.uid, undecided

    return asyncio.run(run())


def test_the_race_waits_a_little_for_a_better_rated_miner_expected_soon():
    # noisy (2) commits first; good (1) is rated higher and usually commits within 60 ms: it wins
    assert race_of({1: 0.03, 2: 0.0}, {1: 0.9, 2: 0.65}, {1: 0.06, 2: 0.01}, patience=0.15)[0] == 1
    # the slow miner (3) is rated higher too, but expected 1.5 s later: not waited for
    assert race_of({2: 0.0, 3: 1.5}, {2: 0.65, 3: 0.8}, {2: 0.01, 3: 1.5}, patience=0.15) == (2, {3})
    # good is expected soon but never commits: the wait ends when it was due, not when good gives up
    assert race_of({1: None, 2: 0.0}, {1: 0.9, 2: 0.65}, {1: 0.05, 2: 0.01}, patience=0.15) == (2, {1})
    # no history for good yet: the first to commit wins, as before
    assert race_of({1: 0.05, 2: 0.0}, {1: 0.9, 2: 0.65}, {2: 0.01}, patience=0.15)[0] == 2

"""The validator ranks miners of known quality on a live local subnet, and the loop closes.

good > slow > noisy > broken, and the copy-cat (which answers what the good miner
answers, later) ends up below every honest miner. Weights land in the subnet
file, incentive follows, and the API's ``top_n`` routes to the best miner.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest
from openai import OpenAI

from shared.signed_http import SignedClient

BEHAVIOURS = ["good", "noisy", "slow", "broken", "copycat"]
# The tasks where copying shows: honest miners return the same pages for web retrieval, so a copy-cat's
# web answers cannot be told from honest ones (tests/test_web_retrieval_and_availability.py covers them).
TASK_MIX = "InferenceTask:0.5,WebQuestionAnsweringTask:0.5"


@pytest.fixture(scope="module")
def subnet(tmp_path_factory, subnet_factory):
    net = subnet_factory(tmp_path_factory.mktemp("incentive"), behaviours=BEHAVIOURS, api_workers=1,
                         validator_settings={"synthetic_interval_seconds": 0.2, "weights_interval_seconds": 3,
                                             # slow's 1.5 s costs it 15% of its reward (10 s: 7.5%), well clear
                                             # of the question-answering noise between good and slow
                                             "synthetic_timeout": 5.0, "task_mix": TASK_MIX})
    yield net
    net.stop()


def validator_get(net, signer, path: str) -> dict:
    async def get() -> dict:
        client = SignedClient(signer)
        try:
            return await client.get_json(net.validator_url, path, receiver=signer.hotkey)
        finally:
            await client.close()

    return asyncio.run(get())


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def scores_by_behaviour(net, signer) -> dict[str, float]:
    table = validator_get(net, signer, "/scores")
    by_uid = {row["uid"]: row for row in table["scores"]}
    return {m.behaviour: by_uid[m.uid] for m in net.members if m.role == "miner" and m.uid in by_uid}


def test_miners_are_ordered_within_a_few_weight_steps(subnet, signer_for):
    signer = signer_for(subnet, "validator")

    def settled():
        table = validator_get(subnet, signer, "/scores")
        rows = scores_by_behaviour(subnet, signer)
        ready = table["weight_steps"] >= 3 and len(rows) == 5 and min(r["rewards"] for r in rows.values()) >= 25
        return rows if ready else None

    rows = wait_until(settled, 90, "three weight steps and 25 rewards per miner")
    score = {behaviour: row["score"] for behaviour, row in rows.items()}
    assert score["good"] > score["slow"] > score["noisy"] > score["broken"] >= 0.0, score
    assert score["copycat"] < score["noisy"], score
    weights = {behaviour: row["weight"] for behaviour, row in rows.items()}
    assert weights["good"] > weights["slow"] > weights["noisy"] > 0 and weights["broken"] == weights["copycat"] == 0


def test_weights_set_incentive_and_top_n_follows(subnet, signer_for):
    good = subnet.member("miner", "good")
    validator = subnet.member("validator")

    def best_by_incentive():
        document = json.loads(subnet.subnet_file.read_text())
        if validator.hotkey not in document["weights"]:
            return False
        incentive = {n["uid"]: n["incentive"] for n in document["neurons"]}
        return max(incentive, key=incentive.get) == good.uid

    # weights are set every 3 s from moving averages; the good miner must come out on top of the chain's incentive
    wait_until(best_by_incentive, 30, "the good miner to hold the most incentive")

    client = OpenAI(base_url=subnet.api_url + "/v1", api_key=subnet.create_api_key(), max_retries=0)

    def routed_to_best():
        reply = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}],
                                               extra_body={"top_n": 1})
        return reply.miner_uid == good.uid

    wait_until(routed_to_best, 15, "top_n=1 to route to the best-rated miner")


def test_organic_items_are_scored_exactly_once(subnet, signer_for):
    signer = signer_for(subnet, "validator")
    client = OpenAI(base_url=subnet.api_url + "/v1", api_key=subnet.create_api_key(), max_retries=0)
    ids = [client.chat.completions.create(model="default", messages=[{"role": "user", "content": "score me"}]).id
           for _ in range(5)]

    def all_scored():
        try:
            return all(validator_get(subnet, signer, f"/scoring/items/{i}")["scored"] for i in ids)
        except Exception:
            return False

    wait_until(all_scored, 30, "the organic items to be scored")
    item = validator_get(subnet, signer, f"/scoring/items/{ids[0]}")
    assert len(item["key_id"]) == 32 and "sk-" not in item["key_id"]  # the key, hashed: its traffic can be capped
    stats = validator_get(subnet, signer, "/scoring/stats")  # one snapshot: nothing scored twice, nothing lost
    assert stats["scored"] + stats["pending"] + stats["dropped"] == stats["received"], stats
    assert stats["items_by_source"]["organic"] >= 5


def test_a_restart_keeps_the_scores(subnet, signer_for):
    signer = signer_for(subnet, "validator")
    subnet.stop_process("validator")
    validator = subnet.member("validator")
    with sqlite3.connect(subnet.directory / "data" / validator.name / "validator.sqlite") as db:
        stored = {uid: (score, rewards) for uid, score, rewards in db.execute("SELECT uid, score, rewards FROM scores")}
    assert len(stored) == 5 and min(rewards for _, rewards in stored.values()) >= 25, stored
    subnet.start_validator()
    after = wait_until(lambda: _try_scores(subnet, signer), 30, "the validator to come back")
    for behaviour, row in after.items():
        score, rewards = stored[row["uid"]]
        assert row["rewards"] >= rewards, behaviour  # restored, then perhaps moved on by new rewards
        if row["rewards"] == rewards:
            assert row["score"] == pytest.approx(score, abs=1e-6), behaviour  # /scores rounds to 6 places
    assert after["good"]["score"] > after["noisy"]["score"] > after["broken"]["score"], after


def _try_scores(net, signer):
    try:
        return scores_by_behaviour(net, signer)
    except Exception:
        return None

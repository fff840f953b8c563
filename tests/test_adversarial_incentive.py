"""Cheats next to honest miners on one live local subnet: honesty must be the best strategy.

Every attack class of docs/incentive.md runs at once, each as a dishonest
miner built from the reference miner (``tests/dishonest_miner.py``), next to
the four honest demo miners, for at least three weight steps — while a key
holder grief-pins the good miner through the API. Real processes, real signed
HTTP; only the chain is the local subnet file.

Expected: every answering honest miner (good, slow, noisy) ends above every
cheat; the honest order good > slow > noisy > broken holds; cheats caught at
their tricks go below zero, end on probation at or below zero (so no higher
than the broken miner) and get no weight; the griefed good miner stays on top,
within the organic bound.
"""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest
from openai import OpenAI
from test_incentive_loop import validator_get, wait_until
from test_metrics_health import value
from test_resilience import dashboard_cookie, get_json

from localnet.__main__ import score_table

HONEST = ["good", "slow", "noisy", "broken"]
CAUGHT_CHEATS = ["passage_dump", "self_hosted", "duplicate_urls", "relabel", "truncation", "instant_copy",
                 "paraphrase_copy", "framing"]
BEHAVIOURS = HONEST + ["specialist"] + CAUGHT_CHEATS
# Cheats at some answers only: ``duplicate_urls`` asked for one result returns one page, no duplicate. Caught at the
# others, it restarts at -2 and its averages climb back with its honest work until the next catch (once +0.33 at
# the end of a run, before the probation): the probation (PROBATION_SECONDS, 6 h by default) holds its score at or
# below zero meanwhile, so it ends at 0 or below, with no weight.
INTERMITTENT = {"duplicate_urls"}
MODULE = "tests.dishonest_miner"
ORGANIC_BOUND = 0.1


@pytest.fixture(scope="module")
def subnet(tmp_path_factory, subnet_factory):
    directory = tmp_path_factory.mktemp("adversarial")
    leak = directory / "leak"
    leak.mkdir()
    settings = {
        "good": {"leak_dir": leak}, "slow": {"leak_dir": leak},
        "specialist": {"miner_tasks": "InferenceTask"},
        "instant_copy": {"leak_dir": leak, "copy_from": "good"},
        "paraphrase_copy": {"leak_dir": leak, "copy_from": "good"},
        "framing": {"leak_dir": leak, "copy_from": "slow"},
    }
    net = subnet_factory(
        directory, behaviours=BEHAVIOURS, api_workers=1,
        miner_modules=["miner" if b in ("noisy", "broken") else MODULE for b in BEHAVIOURS],
        miner_settings=[settings.get(b, {}) for b in BEHAVIOURS],
        validator_settings={"synthetic_interval_seconds": 0.2, "weights_interval_seconds": 4,
                            "synthetic_sample_size": len(BEHAVIOURS), "synthetic_timeout": 5.0,
                            "organic_bound": ORGANIC_BOUND, "organic_per_key_cap": 20})
    yield net
    net.stop()


def grief(net, key: str, target: int, stop: threading.Event) -> int:
    """A key holder pins the good miner to a model and a task it never offered, as fast as the API lets it."""
    client = OpenAI(base_url=net.api_url + "/v1", api_key=key, max_retries=0, timeout=10)
    sent = 0
    while not stop.is_set():
        for extra in ({"uids": [target]}, {"uids": [target], "task": "ProgrammingTask"}):
            try:
                client.chat.completions.create(model="mystery-model", messages=[{"role": "user", "content": "hi"}],
                                               extra_body=extra)
            except Exception:
                pass  # refused or failed: either way the validator must not hold it against the miner
            sent += 1
        time.sleep(0.05)
    return sent


def test_honest_miners_out_earn_every_cheat(subnet, signer_for):
    signer = signer_for(subnet, "validator")
    good = subnet.member("miner", "good")
    stop = threading.Event()
    griefer = threading.Thread(target=grief, args=(subnet, subnet.create_api_key("griefer"), good.uid, stop),
                               daemon=True)
    griefer.start()

    lowest: dict[str, float] = {}  # each miner's lowest score seen while waiting: a caught cheat's went below 0

    def settled():
        table = validator_get(subnet, signer, "/scores")
        rows = {m.behaviour: r for m in subnet.members if m.role == "miner"
                for r in table["scores"] if r["uid"] == m.uid}
        for behaviour, row in rows.items():
            lowest[behaviour] = min(lowest.get(behaviour, row["score"]), row["score"])
        ready = (table["weight_steps"] >= 3 and len(rows) == len(BEHAVIOURS)
                 and min(r["rewards"] for r in rows.values()) >= 20
                 and all(lowest[cheat] < 0 for cheat in CAUGHT_CHEATS))  # the task mix is random: wait for it
        return rows if ready else None

    try:
        rows = wait_until(settled, 240, "three weight steps, 20 rewards per miner and every cheat caught once")
    finally:
        stop.set()
        griefer.join(15)
    score = {b: r["score"] for b, r in rows.items()}
    weight = {b: r["weight"] for b, r in rows.items()}
    print("\nscores:", {b: round(s, 3) for b, s in sorted(score.items(), key=lambda kv: -kv[1])})
    print("tasks:", {b: rows[b]["tasks"] for b in BEHAVIOURS})
    assert score["good"] > score["slow"] > score["noisy"] > score["broken"], score
    cheats = ["specialist"] + CAUGHT_CHEATS
    for honest in ("good", "slow", "noisy"):
        for cheat in cheats:
            assert score[honest] > score[cheat], (honest, cheat, score)
    for cheat in CAUGHT_CHEATS:  # caught at their tricks: below zero at least once (a caught miner restarts at -2),
        assert lowest[cheat] < 0, (cheat, lowest)  # and on probation since, at or below zero with no weight
        assert score[cheat] <= 0 <= score["broken"] and weight[cheat] == 0.0, (cheat, score)
        assert rows[cheat]["probation_until"] > time.time() + 3600, (cheat, rows[cheat])
    for cheat in set(CAUGHT_CHEATS) - INTERMITTENT:  # cheating at every answer: still below zero
        assert score[cheat] < 0, (cheat, score)
    for honest in HONEST:
        assert rows[honest]["probation_until"] is None, (honest, rows[honest])
    assert weight["good"] > weight["slow"] > weight["noisy"] > weight["specialist"] == 0.0, weight
    assert score["specialist"] <= score["broken"], score  # serves 40% of the mix: no score until it serves all
    assert rows["good"]["organic_factor"] >= 1 - ORGANIC_BOUND, rows["good"]
    assert max(score, key=score.get) == "good"
    # the admin sees who is on probation in the dashboard
    status, miners = get_json(subnet.api_url + "/dashboard/api/miners", dashboard_cookie(subnet))
    on_probation = {m.behaviour for m in subnet.members if m.role == "miner"
                    for row in miners["miners"] if row["uid"] == m.uid and row["probation_until"]}
    assert status == 200 and on_probation == set(CAUGHT_CHEATS), on_probation
    with urllib.request.urlopen(subnet.validator_url + "/metrics", timeout=10) as response:  # and the operator
        metrics = response.read().decode()
    left = {m.behaviour: value(metrics, "validator_miner_probation_seconds", {"uid": str(m.uid)})
            for m in subnet.members if m.role == "miner"}
    assert all(left[cheat] > 3600 for cheat in CAUGHT_CHEATS) and all(left[h] == 0 for h in HONEST), left
    flagged = {line.split()[2] for line in score_table(subnet, signer).splitlines() if "on probation" in line}
    assert flagged == set(CAUGHT_CHEATS), flagged  # the demo's table says so too

"""An API worker forwards rounds for scoring within a budget per miner and key (``api.forward_budget``).

The rules first, as the budget applies them; then a whole subnet whose API worker has a budget of three
rounds per key: what is over it is logged but never reaches the validator, and one key's flood does not
keep another key's rounds from it.
"""

from __future__ import annotations

import pytest
from gateway_client import admin, call, eventually

from api.forward_budget import ForwardBudget
from api.settings import ApiSettings
from shared.schemas import key_id as hashed_key_id
from shared.signed_http import SignedCallError, SignedClient
from validator.settings import ValidatorSettings

MESSAGES = [{"role": "user", "content": "What does the validator count?"}]


def test_a_key_gets_its_budget_per_miner_then_is_refused():
    budget = ForwardBudget(per_key=3, per_miner=100, window=60)
    assert [budget.admit([1], "k", now=10.0) for _ in range(5)] == [True, True, True, False, False]
    assert budget.refused == 2
    assert budget.admit([2], "k", now=10.0)  # another miner: a budget of its own


def test_a_flooding_key_does_not_use_up_another_keys_rounds():
    budget = ForwardBudget(per_key=3, per_miner=100, window=60)
    for _ in range(1000):
        budget.admit([1], "flood", now=1.0)
    assert [budget.admit([1], "other", now=1.0) for _ in range(4)] == [True, True, True, False]


def test_the_miner_budget_holds_across_keys():
    budget = ForwardBudget(per_key=2, per_miner=5, window=60)
    admitted = [budget.admit([7], f"key-{n}", now=0.0) for n in range(8)]
    assert admitted == [True] * 5 + [False] * 3


def test_a_new_window_starts_every_count_again():
    budget = ForwardBudget(per_key=1, per_miner=1, window=60)
    assert budget.admit([1], "k", now=100.0) and not budget.admit([1], "k", now=159.9)
    assert budget.admit([1], "k", now=160.0)


def test_a_round_goes_while_any_of_its_miners_is_within_budget():
    budget = ForwardBudget(per_key=1, per_miner=100, window=60)
    assert budget.admit([1], "k", now=0.0)
    assert budget.admit([1, 2], "k", now=0.0)  # miner 2 still has room; miner 1 is not counted again
    assert budget.counted[(1, "k")] == 1 and budget.counted[(2, "k")] == 1
    assert not budget.admit([1, 2], "k", now=0.0)


def test_rounds_without_a_key_share_one_and_zero_means_no_limit():
    budget = ForwardBudget(per_key=1, per_miner=0, window=60)
    assert budget.admit([1], None, now=0.0) and not budget.admit([1], None, now=0.0)
    unlimited = ForwardBudget(per_key=0, per_miner=0, window=60)
    assert all(unlimited.admit([1], "k", now=0.0) for _ in range(10_000))


def test_the_defaults_forward_what_the_validator_counts_as_a_trickle_not_a_burst(monkeypatch):
    """A key flooding one miner at 1,000 rounds a second for three minutes, under the shipped defaults: every
    minute of the validator's (whatever its phase) gets at least its caps' worth, per key and per miner; no
    second carries more than one budget window's worth (with one 60 s window, the first 3,000 rounds of every
    minute went at once); and per minute no more than 150 times the validator's caps, plus one window."""
    for name in ("FORWARD_BUDGET_PER_KEY", "FORWARD_BUDGET_PER_MINER", "FORWARD_BUDGET_WINDOW_SECONDS",
                 "ORGANIC_PER_KEY_CAP", "ORGANIC_PER_MINER_CAP", "ORGANIC_WINDOW_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    api, validator = ApiSettings(_env_file=None), ValidatorSettings(_env_file=None)
    budget = ForwardBudget(per_key=api.forward_budget_per_key, per_miner=api.forward_budget_per_miner,
                           window=api.forward_budget_window_seconds)
    per_second = [sum(budget.admit([3], "flood", now=second + n / 1000) for n in range(1000))
                  for second in range(180)]
    minute = int(validator.organic_window_seconds)
    minutes = [sum(per_second[start:start + minute]) for start in range(180 - minute + 1)]
    assert min(minutes) >= max(validator.organic_per_key_cap, validator.organic_per_miner_cap)
    assert max(per_second) <= 150 * validator.organic_per_key_cap // 10  # a tenth of a minute's budget
    assert max(minutes) <= 150 * validator.organic_per_key_cap + api.forward_budget_per_key
    assert budget.refused == 180 * 1000 - sum(per_second)


# -- through a subnet ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def budgeted_subnet(subnet_factory, tmp_path_factory):
    net = subnet_factory(tmp_path_factory.mktemp("budget"), behaviours=["good"], api_workers=1,
                         extra_env={"FORWARD_BUDGET_PER_KEY": "3", "FORWARD_BUDGET_WINDOW_SECONDS": "3600"})
    yield net
    net.stop()


async def at_validator(net, signer, request_id: str) -> bool:
    client = SignedClient(signer)
    try:
        await client.get_json(net.validator_url, f"/scoring/items/{request_id}", receiver=signer.hotkey)
        return True
    except SignedCallError as exc:
        assert exc.status == 404, exc
        return False
    finally:
        await client.close()


async def test_rounds_over_a_keys_budget_are_logged_but_not_forwarded(budgeted_subnet, signer_for):
    net = budgeted_subnet
    signer = signer_for(net, "validator")
    keys = {}
    for name in ("flood", "other"):
        created = await admin(net, "POST", f"/create-api-key/?name={name}")
        assert created.status == 200, created
        keys[name] = (created.body["api_key"], created.body["id"])
    sent: dict[str, list[str]] = {"flood": [], "other": []}
    for name, count in (("flood", 6), ("other", 2)):
        for _ in range(count):
            answer = await call("POST", net.api_url + "/v1/chat/completions",
                                headers={"Authorization": f"Bearer {keys[name][0]}"},
                                json={"model": "default", "messages": MESSAGES, "max_tokens": 4})
            assert answer.status == 200, answer
            sent[name].append(answer.body["id"])

    async def last_arrived():  # rounds leave in order: once the last one is there, every forwarded one is
        return await at_validator(net, signer, sent["other"][-1]) or None

    assert await eventually(last_arrived, timeout=20), "the other key's rounds never reached the validator"
    arrived = {name: [await at_validator(net, signer, request_id) for request_id in ids]
               for name, ids in sent.items()}
    assert arrived == {"flood": [True] * 3 + [False] * 3, "other": [True, True]}

    item_key_ids = set()
    client = SignedClient(signer)
    try:
        for request_id in sent["flood"][:3] + sent["other"]:
            item = await client.get_json(net.validator_url, f"/scoring/items/{request_id}", receiver=signer.hotkey)
            item_key_ids.add(item["key_id"])
    finally:
        await client.close()
    assert item_key_ids == {hashed_key_id(keys["flood"][1]), hashed_key_id(keys["other"][1])}

    async def all_logged():  # every request is in the log, forwarded or not
        logs = {name: (await admin(net, "GET", f"/logs?key={key_id}&limit=100")).body["logs"]
                for name, (_, key_id) in keys.items()}
        return logs if all(len(logs[name]) == len(sent[name]) for name in sent) else None

    logs = await eventually(all_logged, timeout=15)
    assert logs is not None, "not every request was logged"
    assert {name: sorted(log["request_id"] for log in entries) for name, entries in logs.items()} == \
        {name: sorted(ids) for name, ids in sent.items()}

    health = await call("GET", net.api_url + "/health")
    assert health.body["scoring_over_budget"] == 3


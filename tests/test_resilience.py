"""A failing miner or a validator that is down degrades service; it does not break it.

This module runs its own subnet, since it kills parts of it.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from openai import OpenAI

MESSAGES = [{"role": "user", "content": "Keep answering, please."}]


@pytest.fixture(scope="module")
def subnet(tmp_path_factory, subnet_factory):
    net = subnet_factory(tmp_path_factory.mktemp("resilience"), behaviours=["good", "good", "good"], api_workers=1)
    yield net
    net.stop()


@pytest.fixture(scope="module")
def client(subnet) -> OpenAI:
    return OpenAI(base_url=subnet.api_url + "/v1", api_key=subnet.create_api_key(), max_retries=0, timeout=30)


def ask(client: OpenAI, stream: bool) -> str:
    if stream:
        chunks = list(client.chat.completions.create(model="default", messages=MESSAGES, stream=True))
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return client.chat.completions.create(model="default", messages=MESSAGES).choices[0].message.content


def test_a_miner_killed_mid_run_costs_no_request(subnet, client):
    victim = next(name for name in subnet.processes if name.startswith("miner-1-"))
    with ThreadPoolExecutor(8) as pool:
        before = [pool.submit(ask, client, i % 2 == 0) for i in range(40)]
        subnet.stop_process(victim, grace=0)
        after = [pool.submit(ask, client, i % 2 == 0) for i in range(40)]
        answers = [f.result() for f in before + after]
    assert all(answer.strip() for answer in answers)


def health(subnet) -> dict:
    with urllib.request.urlopen(subnet.api_url + "/health") as response:
        return json.loads(response.read())


def wait_for_health(subnet, predicate, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = health(subnet)
        if predicate(seen):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"health never matched: {seen}")


def test_api_keeps_serving_while_the_validator_is_down(subnet, client):
    subnet.stop_process("validator")
    wait_for_health(subnet, lambda h: h["validator_reachable"] is False)
    answers = [ask(client, stream=i % 2 == 0) for i in range(6)]
    assert all(answer.strip() for answer in answers)
    assert wait_for_health(subnet, lambda h: h["scoring_buffer"] >= 6)  # kept for the validator, not lost

    subnet.start_validator()
    delivered = wait_for_health(subnet, lambda h: h["validator_reachable"] and h["scoring_buffer"] == 0)
    assert delivered["scoring_dropped"] == 0

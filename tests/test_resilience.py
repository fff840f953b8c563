"""A failing miner or a validator that is down degrades service; it does not break it.

This module runs its own subnet, since it kills parts of it.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
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


def get_json(url: str, headers: dict | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def dashboard_cookie(subnet) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", subnet.api_port, timeout=10)
    connection.request("POST", "/dashboard/login", urllib.parse.urlencode({"admin_key": subnet.admin_key}),
                       {"Content-Type": "application/x-www-form-urlencoded"})
    response = connection.getresponse()
    assert response.status == 303
    cookie = response.getheader("Set-Cookie").split(";")[0]
    connection.close()
    return {"Cookie": cookie}


def test_api_keeps_serving_while_the_validator_is_down(subnet, client):
    cookie = dashboard_cookie(subnet)
    subnet.stop_process("validator")
    wait_for_health(subnet, lambda h: h["validator_reachable"] is False)
    answers = [ask(client, stream=i % 2 == 0) for i in range(6)]
    assert all(answer.strip() for answer in answers)
    status, ready = get_json(subnet.api_url + "/health/readiness")  # still routing: still ready, and says why
    assert status == 200 and ready["checks"]["validator"]["ok"] is False and ready["checks"]["directory"]["ok"]
    status, miners = get_json(subnet.api_url + "/dashboard/api/miners", cookie)
    assert status == 200 and miners["validator"]["reachable"] is False and miners["validator"]["error"]
    assert len(miners["miners"]) == 5 and all(m["score"] is None for m in miners["miners"])
    assert wait_for_health(subnet, lambda h: h["scoring_buffer"] >= 6)  # kept for the validator, not lost

    subnet.start_validator()
    delivered = wait_for_health(subnet, lambda h: h["validator_reachable"] and h["scoring_buffer"] == 0)
    assert delivered["scoring_dropped"] == 0

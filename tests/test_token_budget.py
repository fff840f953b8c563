"""Token budgets per key: a total quota and tokens per minute, metered from usage (streams included),
enforced by every worker (two on one port here), shown in /v1/usage, the admin API and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import gateway_client as gw
import openai
from openai import OpenAI

from api.keys import KeyRecord
from api.store import open_store
from api.token_budget import tokens_last_minute

MESSAGES = [{"role": "user", "content": "hi"}]


async def new_key(net, query: str) -> tuple[str, str]:
    answer = await gw.admin(net, "POST", f"/create-api-key/{query}")
    assert answer.status == 200, answer
    return answer.body["id"], answer.body["api_key"]


def refused_within(send, attempts: int):
    """Send until refused (usage reaches the store within about a second); the refusal."""
    for _ in range(attempts):
        try:
            send()
        except openai.APIStatusError as refused:
            return refused
        time.sleep(0.3)
    raise AssertionError(f"not refused after {attempts} requests")


async def test_token_quota_counts_streamed_answers_and_refuses_past_it(local_subnet):
    key_id, key = await new_key(local_subnet, "?token_quota=20")
    client = OpenAI(base_url=local_subnet.api_url + "/v1", api_key=key, max_retries=0)
    good = local_subnet.member("miner", "good").uid

    def streamed() -> None:  # only streams: their usage must count too
        for _ in client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=8, stream=True,
                                                extra_body={"uids": [good]}):  # the broken miner fails mid-stream
            pass

    refused = refused_within(streamed, 12)
    assert refused.status_code == 402 and refused.body["code"] == "token_quota_exceeded"
    usage = await gw.call("GET", local_subnet.api_url + "/v1/usage", headers={"api-key": key})
    budget = usage.body["token_budget"]
    assert budget["token_quota"] == 20 and budget["tokens_used"] >= 20 and budget["tokens_remaining"] == 0
    assert usage.body["total_tokens"] == budget["tokens_used"]
    raised = await gw.admin(local_subnet, "PUT", f"/modify-api-key/{key_id}?token_quota=1000")
    assert raised.body["key"]["token_quota"] == 1000

    async def served_again():
        answer = await gw.chat(local_subnet.api_url, key)
        return answer if answer.status == 200 else None

    assert await gw.eventually(served_again, timeout=3)


async def test_tokens_per_minute_limit_is_a_429_with_retry_after(local_subnet):
    _, key = await new_key(local_subnet, "?tpm_limit=12")
    client = OpenAI(base_url=local_subnet.api_url + "/v1", api_key=key, max_retries=0)
    first = client.chat.completions.with_raw_response.create(model="default", messages=MESSAGES, max_tokens=8)
    assert first.headers["x-ratelimit-limit-tokens"] == "12"
    refused = refused_within(lambda: client.chat.completions.create(model="default", messages=MESSAGES,
                                                                    max_tokens=8), 12)
    assert refused.status_code == 429 and refused.body["code"] == "token_rate_limit_exceeded"
    assert 1 <= int(refused.response.headers["Retry-After"]) <= 60
    assert refused.response.headers["x-ratelimit-remaining-tokens"] == "0"
    usage = (await gw.call("GET", local_subnet.api_url + "/v1/usage", headers={"api-key": key})).body
    assert usage["token_budget"]["tpm_limit"] == 12 and usage["token_budget"]["tpm_remaining"] == 0


async def test_bad_token_budget_fields_are_422(local_subnet):
    for query in ("?token_quota=0", "?tpm_limit=lots"):
        answer = await gw.admin(local_subnet, "POST", f"/create-api-key/{query}")
        assert answer.status == 422 and query[1:].split("=")[0] in answer.body["error"]["message"]


def test_the_cli_sets_and_shows_token_budgets(local_subnet):
    env = {**os.environ, "API_ENV_FILE": "/nonexistent", "DATA_DIR": str(local_subnet.directory / "data" / "api")}
    done = subprocess.run([sys.executable, "-m", "api.cli", "keys", "create", "--name", "budgeted",
                           "--token-quota", "5000", "--tpm-limit", "600"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)["key"]
    assert (shown["token_quota"], shown["tpm_limit"]) == (5000, 600)


async def test_tokens_in_the_sliding_minute_on_each_store(database):  # SQLite and PostgreSQL (migration 4 too)
    url, path, schema = database
    store = await open_store(url, path, schema)
    try:
        now = 1_800_000_030.0  # 30 s into a minute
        minute = int(now // 60)
        await store.db.execute("INSERT INTO usage_minutes (minute, key_id, prompt_tokens, completion_tokens)"
                               " VALUES ($1, 'k', 10, 30), ($2, 'k', 1, 4), ($3, 'k', 100, 100), ($1, 'other', 9, 9)",
                               minute, minute - 1, minute - 2)

        class State:
            pass

        state = State()
        state.store = store
        used, reset = await tokens_last_minute(state, "k", now)
        assert (used, reset) == (40 + 5 * 0.5, 30.0)
        assert KeyRecord(id="k", key_hash="h", key_hint="x").token_quota is None
    finally:
        await store.close()

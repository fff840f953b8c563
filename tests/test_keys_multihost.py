"""Two API worker processes on two ports sharing PostgreSQL and Redis: limits, credits and revocation hold across both.

This is what several hosts behind a load balancer look like: each request of a
burst goes to the two workers in turn, and nothing but the shared store and
counters connects them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from gateway_client import MESSAGES, admin, burst, call, chat, eventually
from store_fixtures import drop_redis_prefix, drop_schema, unique_name

from localnet.launcher import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, subnet_factory, postgres_url, redis_url):
    schema, prefix = unique_name("test_keys"), unique_name("test") + ":"
    env = {"DATABASE_URL": postgres_url, "DATABASE_SCHEMA": schema, "REDIS_URL": redis_url, "REDIS_PREFIX": prefix,
           "MINER_CHUNK_DELAY": "0.02"}
    net = None
    try:
        net = subnet_factory(tmp_path_factory.mktemp("multihost"), behaviours=["good", "good"], api_workers=1,
                             api_ports=[free_port(), free_port()], extra_env=env)
        net.store_env = env
        yield net
    finally:
        if net is not None:
            net.stop()
        drop_schema(postgres_url, schema)
        drop_redis_prefix(redis_url, prefix)


async def new_key(net, query: str = "", **fields) -> tuple[str, str]:
    answer = await admin(net, "POST", f"/create-api-key/{query}", json=fields or None)
    assert answer.status == 200, answer
    return answer.body["api_key"], answer.body["id"]


def cli(net, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_ENV_FILE")}
    env.update(net.store_env, API_ENV_FILE="/nonexistent")
    done = subprocess.run([sys.executable, "-m", "api.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_a_limit_admits_exactly_that_many_across_workers(hosts):
    key, _ = await new_key(hosts, "?rate_limits=6 per minute and 100 per day")
    answers = await burst(hosts.api_urls, key, 20)
    admitted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 429]
    assert (len(admitted), len(refused)) == (6, 14), [a.status for a in answers]
    assert sorted(int(a.headers["X-RateLimit-Remaining"]) for a in admitted) == [0, 1, 2, 3, 4, 5]
    assert all(a.headers["X-RateLimit-Limit"] == "6" for a in answers)
    assert all(a.headers["X-RateLimit-Remaining"] == "0" and 1 <= int(a.headers["Retry-After"]) <= 60
               for a in refused)
    assert refused[0].body["error"]["type"] == "rate_limit_error"
    assert "6 per minute" in refused[0].body["error"]["message"]


async def test_credits_are_spent_exactly_under_concurrency(hosts):
    key, key_id = await new_key(hosts, "?credits=10")
    answers = await burst(hosts.api_urls, key, 64)
    statuses = [a.status for a in answers]
    assert (statuses.count(200), statuses.count(402)) == (10, 54), statuses
    out = next(a for a in answers if a.status == 402)
    assert out.body["error"]["code"] == "insufficient_credits" and "credits" in out.body["error"]["message"]
    for url in hosts.api_urls:
        left = await call("GET", url + "/v1/credits", headers={"api-key": key})
        assert left.body == {"id": key_id, "credits": 0}
    info = (await admin(hosts, "GET", f"/keys/{key_id}")).body
    assert (info["credits"], info["credits_used"]) == (0, 10)
    usage = await eventually(lambda: requests_logged(hosts, key, 64), timeout=5)
    assert usage, json.dumps((await call("GET", hosts.api_url + "/v1/usage", headers={"api-key": key})).body)
    assert usage["used"] == 10 and usage["max"] == 10 and usage["remaining"] == 0


async def requests_logged(net, key: str, count: int):
    usage = (await call("GET", net.api_url + "/v1/usage", headers={"api-key": key})).body
    return usage if usage.get("requests") == count else None


async def test_a_deleted_key_is_refused_by_the_other_worker_within_a_second(hosts):
    first, second = hosts.api_urls
    key, key_id = await new_key(hosts)
    assert (await chat(first, key)).status == 200 and (await chat(second, key)).status == 200  # both cached it
    assert (await admin(hosts, "DELETE", f"/delete-api-key/{key}", url=first)).status == 200

    async def refused():
        return (await chat(second, key)).status == 401

    assert await eventually(refused, timeout=1.5)
    assert (await admin(hosts, "GET", f"/keys/{key_id}", url=second)).status == 404


async def test_a_disabled_key_is_refused_everywhere_and_comes_back(hosts):
    first, second = hosts.api_urls
    key, key_id = await new_key(hosts)
    assert (await chat(second, key)).status == 200
    assert (await admin(hosts, "PUT", f"/modify-api-key/{key_id}?enabled=false", url=first)).status == 200

    async def status_on_second():
        return await chat(second, key)

    answer = await eventually(lambda: _status(status_on_second, 401), timeout=1.5)
    assert answer and answer.body["error"]["code"] == "disabled_api_key"
    await admin(hosts, "PUT", f"/modify-api-key/{key_id}?enabled=true", url=second)
    assert await eventually(lambda: _status(lambda: chat(first, key), 200), timeout=1.5)


async def _status(ask, status: int):
    answer = await ask()
    return answer if answer.status == status else None


async def test_an_expired_key_is_refused(hosts):
    key, _ = await new_key(hosts, expires_in=1.0)
    assert (await chat(hosts.api_urls[1], key)).status == 200
    answer = await eventually(lambda: _status(lambda: chat(hosts.api_urls[0], key), 401), timeout=4)
    assert answer and answer.body["error"]["code"] == "expired_api_key"
    assert (await chat(hosts.api_urls[1], key)).status == 401


async def test_the_store_holds_no_key(hosts):
    import asyncpg

    key, key_id = await new_key(hosts, name="hidden")
    conn = await asyncpg.connect(hosts.store_env["DATABASE_URL"],
                                 server_settings={"search_path": hosts.store_env["DATABASE_SCHEMA"]})
    try:
        rows = await conn.fetch("SELECT t::text AS row FROM api_keys t")
    finally:
        await conn.close()
    dump = "\n".join(r["row"] for r in rows)
    assert key_id in dump and key not in dump and key[-12:] not in dump


async def test_cli_and_api_agree(hosts):
    created = cli(hosts, "keys", "create", "--name", "from-cli", "--credits", "3", "--rate-limits", "50 per minute")
    key, key_id = created["api_key"], created["id"]
    assert (await chat(hosts.api_urls[0], key)).status == 200
    await eventually(lambda: requests_logged(hosts, key, 1), timeout=5)
    from_api = (await admin(hosts, "GET", f"/keys/{key_id}")).body
    assert cli(hosts, "keys", "info", key_id) == from_api
    assert from_api["credits"] == 2 and from_api["usage"]["requests"] == 1
    listed = cli(hosts, "keys", "list", "--json", "--limit", "1000")["keys"]
    assert from_api in listed and key not in json.dumps(listed)

    await admin(hosts, "PUT", f"/modify-api-key/{key_id}?add_credits=5")
    assert cli(hosts, "keys", "info", key)["credits"] == 7
    logs = cli(hosts, "logs", "--key", key_id, "--json")["logs"]
    assert logs == (await admin(hosts, "GET", f"/logs?key={key_id}")).body["logs"]
    assert cli(hosts, "usage", key_id)["keys"][0]["requests"] == 1

    cli(hosts, "keys", "delete", key_id)
    assert await eventually(lambda: _status(lambda: chat(hosts.api_urls[1], key), 401), timeout=1.5)


async def test_request_logs_name_every_miner(hosts):
    key, key_id = await new_key(hosts)
    miners = [m for m in hosts.members if m.role == "miner"]
    assert (await chat(hosts.api_urls[1], key, uids=[m.uid for m in miners])).status == 200
    found = await eventually(lambda: logs_of(hosts, key_id), timeout=5)
    assert found, "no request log"
    log = found[0]
    assert (log["status"], log["outcome"], log["task"], log["strategy"]) == (200, "ok", "InferenceTask", "uids")
    assert log["completion_tokens"] == 3 and log["charged"] == 1 and log["latency_ms"] > 0
    assert {(m["uid"], m["hotkey"]) for m in log["miners"]} == {(m.uid, m.hotkey) for m in miners}
    assert [m["uid"] for m in log["miners"] if m["winner"]] == [log["miner_uid"]]
    other = next(m.uid for m in miners if m.uid != log["miner_uid"])
    by_miner = (await admin(hosts, "GET", f"/logs?uid={other}&key={key_id}")).body["logs"]
    assert [entry["request_id"] for entry in by_miner] == [log["request_id"]]


async def logs_of(net, key_id: str):
    logs = (await admin(net, "GET", f"/logs?key={key_id}")).body["logs"]
    return logs if logs and all(entry["miners"] is not None for entry in logs) else None


async def test_a_stream_cut_by_the_client_is_metered(hosts):
    key, key_id = await new_key(hosts, "?credits=5")
    good = hosts.member("miner", "good").uid
    async with aiohttp.ClientSession() as session:
        async with session.post(hosts.api_urls[0] + "/v1/chat/completions", headers={"api-key": key},
                                json={"messages": MESSAGES, "stream": True, "max_tokens": 400,
                                      "uids": [good]}) as response:
            assert response.status == 200
            seen = 0
            async for line in response.content:
                if line.startswith(b"data:"):
                    seen += 1
                if seen >= 3:
                    break
            response.close()  # the client goes away mid-answer
    found = await eventually(lambda: logs_of(hosts, key_id), timeout=5)
    log = found[0]
    assert log["outcome"] == "client_closed" and log["stream"] and log["charged"] == 1
    assert 1 <= log["completion_tokens"] < 400
    winner = next(m for m in log["miners"] if m["winner"])
    assert winner["outcome"] == "cancelled", winner  # the disconnect stopped its miner mid-answer
    usage = await eventually(lambda: requests_logged(hosts, key, 1), timeout=2)
    assert usage["completion_tokens"] == log["completion_tokens"] and usage["remaining"] == 4


async def test_a_streamed_answer_is_metered_like_its_usage_chunk(hosts):
    key, key_id = await new_key(hosts)
    async with aiohttp.ClientSession() as session:
        async with session.post(hosts.api_urls[1] + "/v1/chat/completions", headers={"api-key": key},
                                json={"messages": MESSAGES, "stream": True, "max_tokens": 7,
                                      "stream_options": {"include_usage": True}}) as response:
            events = [json.loads(line[5:]) async for line in response.content
                      if line.startswith(b"data:") and not line.startswith(b"data: [DONE]")]
    usage_chunk = events[-1]["usage"]
    usage = await eventually(lambda: requests_logged(hosts, key, 1), timeout=5)
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        usage_chunk["prompt_tokens"], usage_chunk["completion_tokens"])


async def test_metrics_of_two_ports_add_up(hosts):
    """Each port's /metrics counts its own process; Prometheus sums the targets."""
    from test_metrics_health import CREDITS_ROUTE, scrape, value

    key, _ = await new_key(hosts)
    before = [value(await scrape(url), "gateway_http_requests_total", CREDITS_ROUTE) for url in hosts.api_urls]
    sent = [7, 5]
    for url, count in zip(hosts.api_urls, sent):
        for _ in range(count):
            assert (await call("GET", url + "/v1/credits", headers={"api-key": key})).status == 200
    after = [value(await scrape(url), "gateway_http_requests_total", CREDITS_ROUTE) for url in hosts.api_urls]
    assert [a - b for a, b in zip(after, before)] == sent
    assert sum(after) - sum(before) == sum(sent)
    # one worker per port: its metrics live in its memory, no multiprocess files
    assert not (hosts.directory / "data" / "api" / "metrics").exists()

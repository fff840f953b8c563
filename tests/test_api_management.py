"""``/api_management``: the admin key creates, modifies and deletes keys; keys are stored hashed."""

from __future__ import annotations

import sqlite3

import aiohttp
import gateway_client as gw
import openai
import pytest
from openai import OpenAI

MESSAGES = [{"role": "user", "content": "hi"}]


async def admin(net, method: str, path: str, key: str | None = None) -> tuple[int, dict]:
    headers = {"admin-key": key if key is not None else net.admin_key}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, net.api_url + "/api_management" + path, headers=headers) as response:
            return response.status, await response.json()


def chat_works(net, key: str) -> bool:
    client = OpenAI(base_url=net.api_url + "/v1", api_key=key, max_retries=0)
    try:
        client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=3)
        return True
    except openai.AuthenticationError:
        return False


async def test_key_lifecycle(local_subnet):
    status, created = await admin(local_subnet, "POST", "/create-api-key/?rate_limit=5&name=alice")
    assert status == 200 and created["message"] == "API key created"
    key = created["api_key"]
    assert chat_works(local_subnet, key)

    status, answer = await admin(local_subnet, "PUT", f"/modify-api-key/{key}?enabled=false")
    assert (status, answer["message"], answer["api_key"]) == (200, "API key updated", key)  # the subnet's answer
    assert not chat_works(local_subnet, key)
    await admin(local_subnet, "PUT", f"/modify-api-key/{key}?enabled=true&rate_limit=9")
    assert chat_works(local_subnet, key)

    status, answer = await admin(local_subnet, "DELETE", f"/delete-api-key/{key}")
    assert (status, answer["message"]) == (200, "API key deleted")
    assert not chat_works(local_subnet, key)
    status, answer = await admin(local_subnet, "DELETE", f"/delete-api-key/{key}")
    assert status == 404 and answer["error"]["message"] == "API key not found"


@pytest.mark.parametrize("field", ["rate_limit", "credits", "token_quota", "tpm_limit", "add_credits",
                                   "rate_limits"])
async def test_counts_past_the_largest_are_a_422_not_a_database_error(local_subnet, field):
    """Every count a key holds is bounded (``LARGEST_COUNT``, 2**53 - 1): past it the admin API says so,
    on create and on modify, where an overflowing store column made a 500 (found by schemathesis)."""
    too_big = f"{2**53}%20per%20minute" if field == "rate_limits" else str(2**53)
    status, created = await admin(local_subnet, "POST", "/create-api-key/?name=bounded")
    assert status == 200
    for method, path in (("POST", "/create-api-key/"), ("PUT", f"/modify-api-key/{created['api_key']}")):
        status, answer = await admin(local_subnet, method, f"{path}?{field}={too_big}")
        assert status == 422 and str(2**53 - 1) in answer["error"]["message"], answer
    status, answer = await admin(local_subnet, "PUT", f"/modify-api-key/{created['api_key']}?{field}={2**53 - 1}"
                                 if field != "rate_limits" else f"/modify-api-key/{created['api_key']}?credits=7")
    assert status == 200, answer
    status, answer = await admin(local_subnet, "GET", f"/keys?offset={2**53}")
    assert status == 422


@pytest.mark.parametrize("query", [f"status={-10**33}", f"status={10**30}", "status=600", f"uid={10**30}", "uid=-1",
                                   "uid=65536"])
async def test_log_filters_out_of_range_are_a_422(local_subnet, query):
    """A status outside HTTP's or a uid past 16 bits matches nothing and overflowed the store: 422 (schemathesis)."""
    status, answer = await admin(local_subnet, "GET", f"/logs?{query}")
    assert status == 422 and answer["error"]["code"], answer
    status, _ = await admin(local_subnet, "GET", "/logs?status=200&uid=65535")
    assert status == 200


@pytest.mark.parametrize("time", ["Infinity", "-Infinity", "NaN", "1e300", str(10**400)])
async def test_times_no_date_can_tell_are_a_422(local_subnet, time):
    """Unix seconds past the years 1-9999 (infinity and NaN included) in a filter or a key's expiry: 422, where
    the store's comparison or a date conversion failed as a 500 (found by schemathesis)."""
    for path in (f"/usage?until={time}", f"/logs?since={time}", f"/create-api-key/?expires_at={time}"):
        status, answer = await admin(local_subnet, "POST" if "create" in path else "GET", path)
        assert status == 422 and "out of range" in answer["error"]["message"], (path, answer)
    created = await gw.admin(local_subnet, "POST", "/create-api-key/", json={"expires_at": 10**400})
    assert created.status == 422, created.body


@pytest.mark.parametrize("wrong", ["", "admin-wrong"])
async def test_wrong_admin_key_is_refused(local_subnet, wrong):
    status, answer = await admin(local_subnet, "POST", "/create-api-key/", key=wrong)
    assert status == 403 and answer["error"]["message"] == "Invalid admin key"


async def test_keys_are_not_readable_from_the_store(local_subnet):
    _, created = await admin(local_subnet, "POST", "/create-api-key/?name=hidden")
    key = created["api_key"]
    database = local_subnet.directory / "data" / "api" / "api.sqlite"
    dump = "\n".join(sqlite3.connect(database).iterdump())
    assert key not in dump
    assert key[-12:] not in dump


# -- keys, limits, credits, usage on the default store (SQLite; two workers on one port) --------------------------


async def test_fields_list_and_info_are_masked(local_subnet):
    fields = {"name": "bob", "credits": 5, "rate_limits": "60 per minute and 1000 per day",
              "expires_at": "2030-01-01T00:00:00Z", "allowed_tasks": ["InferenceTask"], "allowed_models": "default"}
    created = await gw.admin(local_subnet, "POST", "/create-api-key/", json=fields)
    assert created.status == 200, created
    key, key_id = created.body["api_key"], created.body["id"]
    info = created.body["key"]
    assert (info["credits"], info["rate_limit"], info["expires_at"]) == (5, 60, "2030-01-01T00:00:00Z")
    assert [w["text"] for w in info["rate_limits"]] == ["60 per minute", "1000 per day"]
    assert (info["allowed_tasks"], info["allowed_models"]) == (["InferenceTask"], ["default"])
    listed = await gw.admin(local_subnet, "GET", "/keys?limit=1000")
    assert info in listed.body["keys"] and key not in str(listed.body)
    assert (await gw.admin(local_subnet, "GET", f"/keys/{key}")).body == info
    changed = await gw.admin(local_subnet, "PUT", f"/modify-api-key/{key_id}?rate_limit=30&credits=unlimited"
                                                  "&expires_at=never&allowed_models=any")
    after = changed.body["key"]
    assert [w["text"] for w in after["rate_limits"]] == ["30 per minute", "1000 per day"]
    assert (after["credits"], after["expires_at"], after["allowed_models"]) == (None, None, None)
    assert (await gw.admin(local_subnet, "DELETE", f"/delete-api-key/{key_id}")).status == 200


@pytest.mark.parametrize("query, field", [("?rate_limit=0", "rate_limit"), ("?rate_limits=lots", "rate_limits"),
                                          ("?expires_at=soon", "expires_at"), ("?allowed_tasks=Nope", "allowed_tasks"),
                                          ("?credits=-1", "credits")])
async def test_bad_key_fields_are_422_in_openai_shape(local_subnet, query, field):
    answer = await gw.admin(local_subnet, "POST", f"/create-api-key/{query}")
    assert answer.status == 422 and answer.body["error"]["type"] == "invalid_request_error"
    assert field in answer.body["error"]["message"]


async def test_rate_limit_headers_on_every_response_and_429(local_subnet):
    _, key = await new_key(local_subnet, "?rate_limit=3")
    url = local_subnet.api_url
    ok = await gw.chat(url, key)
    bad = await gw.chat(url, key, messages=[])  # 422: counted, still told how much is left
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions", headers={"api-key": key},
                                json={"messages": gw.MESSAGES, "stream": True, "max_tokens": 2}) as response:
            streamed = (response.status, response.headers.copy())
            await response.read()
    refused = await gw.chat(url, key)
    assert [(a.status, a.headers["X-RateLimit-Remaining"]) for a in (ok, bad)] == [(200, "2"), (422, "1")]
    assert (streamed[0], streamed[1]["X-RateLimit-Remaining"], streamed[1]["X-RateLimit-Limit"]) == (200, "0", "3")
    assert refused.status == 429 and refused.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60 and 0 < int(refused.headers["X-RateLimit-Reset"]) <= 60
    quota = await gw.call("GET", url + "/v1/usage", headers={"api-key": key})  # free: counts nothing
    assert quota.status == 200 and quota.headers["X-RateLimit-Remaining"] == "0"
    assert quota.body["rate_limits"][0] | {"reset_seconds": 0} == {
        "limit": 3, "seconds": 60, "text": "3 per minute", "used": 3, "remaining": 0, "reset_seconds": 0}


async def test_what_fails_costs_no_credit(local_subnet):
    key_id, key = await new_key(local_subnet, "?credits=2&allowed_models=default")
    url = local_subnet.api_url
    broken = local_subnet.member("miner", "broken").uid
    assert (await gw.chat(url, key, messages=[])).status == 422
    assert (await gw.chat(url, key, model="other-model")).status == 403
    assert (await gw.chat(url, key, task="NoSuchTask")).status == 422
    assert (await gw.chat(url, key, uids=[broken])).status == 502  # no miner could answer: refunded

    async def credits_back():
        left = await gw.call("GET", url + "/v1/credits", headers={"api-key": key})
        return left.body if left.body["credits"] == 2 else None

    assert await gw.eventually(credits_back, timeout=2) == {"id": key_id, "credits": 2}
    assert [(await gw.chat(url, key)).status for _ in range(3)] == [200, 200, 402]


async def test_allowed_tasks_and_models_are_enforced(local_subnet):
    _, key = await new_key(local_subnet, "?allowed_tasks=ProgrammingTask&allowed_models=m1")
    denied = await gw.chat(local_subnet.api_url, key)
    assert denied.status == 403 and denied.body["error"]["code"] == "task_not_allowed"
    denied = await gw.chat(local_subnet.api_url, key, task="ProgrammingTask")
    assert denied.status == 403 and denied.body["error"]["code"] == "model_not_allowed"


async def test_usage_and_logs_on_the_default_store(local_subnet):
    key_id, key = await new_key(local_subnet)
    url = local_subnet.api_url
    answers = [await gw.chat(url, key, max_tokens=4) for _ in range(3)]
    assert all(a.status == 200 for a in answers)

    async def logged():
        usage = (await gw.call("GET", url + "/v1/usage", headers={"api-key": key})).body
        return usage if usage["requests"] == 3 else None

    usage = await gw.eventually(logged, timeout=5)
    assert usage, "usage not recorded"
    assert (usage["completion_tokens"], usage["used"], usage["max"], usage["unlimited"]) == (12, 3, None, True)
    logs = (await gw.admin(local_subnet, "GET", f"/logs?key={key_id}&since=2020-01-01")).body["logs"]
    assert sorted(log["request_id"] for log in logs) == sorted(a.body["id"] for a in answers)
    assert all(log["miners"] and log["outcome"] == "ok" for log in logs)
    daily = (await gw.admin(local_subnet, "GET", f"/usage?key={key_id}")).body
    assert daily["keys"][0]["requests"] == 3 and sum(d["requests"] for d in daily["daily"]) == 3


async def new_key(net, query: str = "") -> tuple[str, str]:
    answer = await gw.admin(net, "POST", f"/create-api-key/{query}")
    assert answer.status == 200, answer
    return answer.body["id"], answer.body["api_key"]

"""The request log has one row per miner queried, under the id the client got back (issue 15, item 2).

Each test sends one request on the shared local subnet with a key of its own, then reads that key's
log through ``/api_management/logs``: every miner the request asked (each mixture round, each
reasoning step, each prompt of a completion, each web retrieval miner) is in it, and the log's id is
the answer's id and its ``X-Request-Id``.
"""

from __future__ import annotations

from gateway_client import admin, call, eventually

MESSAGES = [{"role": "user", "content": "How do validators score miners?"}]


def uid_of(net, behaviour: str) -> int:
    return net.member("miner", behaviour).uid


async def new_key(net) -> tuple[str, str]:
    answer = await admin(net, "POST", "/create-api-key/?name=request-log")
    assert answer.status == 200, answer
    return answer.body["api_key"], answer.body["id"]


async def the_log(net, key_id: str) -> dict:
    async def found():
        logs = (await admin(net, "GET", f"/logs?key={key_id}")).body["logs"]
        return logs[0] if logs else None

    log = await eventually(found, timeout=15)
    assert log is not None, "no request log"
    return log


async def post(net, key: str, path: str, body: dict):
    answer = await call("POST", net.api_url + path, headers={"Authorization": f"Bearer {key}"}, json=body)
    assert answer.status == 200, answer
    return answer


async def test_a_mixture_logs_every_miner_of_both_rounds(local_subnet):
    key, key_id = await new_key(local_subnet)
    pinned = [uid_of(local_subnet, b) for b in ("good", "noisy", "slow")]
    answer = await post(local_subnet, key, "/v1/chat/completions",
                        {"model": "default", "messages": MESSAGES, "max_tokens": 8, "mixture": True,
                         "uids": pinned})
    log = await the_log(local_subnet, key_id)
    assert log["request_id"] == answer.body["id"] == answer.headers["X-Request-Id"]
    logged = [m["uid"] for m in log["miners"]]
    assert set(pinned) <= set(logged)  # the first round: every pinned miner
    assert len(logged) > len(pinned)  # and the aggregation round
    assert log["miner_uid"] == answer.body["miner_uid"]
    assert [m["uid"] for m in log["miners"] if m["winner"]] == [answer.body["miner_uid"]]


async def test_test_time_inference_logs_the_miners_of_its_steps(local_subnet):
    key, key_id = await new_key(local_subnet)
    good = uid_of(local_subnet, "good")
    answer = await post(local_subnet, key, "/v1/chat/completions",
                        {"model": "default", "messages": MESSAGES, "max_tokens": 8, "test_time_inference": True,
                         "uids": [good]})
    steps = answer.body["steps"]
    log = await the_log(local_subnet, key_id)
    assert log["request_id"] == answer.body["id"] == answer.headers["X-Request-Id"]
    assert log["miner_uid"] == good == answer.body["miner_uid"]
    assert len(log["miners"]) >= len(steps) + 1  # one call at least per step, and the answer
    assert {m["uid"] for m in log["miners"]} == {good}
    assert log["completion_tokens"] > 0


async def test_web_retrieval_logs_its_miners_under_its_answer_id(local_subnet):
    key, key_id = await new_key(local_subnet)
    good, noisy = uid_of(local_subnet, "good"), uid_of(local_subnet, "noisy")
    answer = await post(local_subnet, key, "/web_retrieval",
                        {"search_query": "Why does a validator need a permit?", "uids": [good, noisy],
                         "max_response_time": 10})
    assert answer.headers["X-Request-Id"] == answer.body["id"]
    log = await the_log(local_subnet, key_id)
    assert log["request_id"] == answer.body["id"]
    assert sorted(m["uid"] for m in log["miners"]) == sorted(m["uid"] for m in answer.body["miners"])
    assert {m["uid"] for m in log["miners"]} == {good, noisy}


async def test_a_completion_of_several_prompts_logs_every_prompts_miners(local_subnet):
    key, key_id = await new_key(local_subnet)
    good, noisy = uid_of(local_subnet, "good"), uid_of(local_subnet, "noisy")
    answer = await post(local_subnet, key, "/v1/completions",
                        {"model": "default", "prompt": ["one", "two", "three"], "max_tokens": 3,
                         "uids": [good, noisy]})
    assert len(answer.body["choices"]) == 3
    log = await the_log(local_subnet, key_id)
    assert log["request_id"] == answer.headers["X-Request-Id"]
    assert answer.body["id"] == "cmpl-" + log["request_id"].removeprefix("chatcmpl-")
    assert len([m for m in log["miners"] if m["winner"]]) == 3  # one answer per prompt
    assert len(log["miners"]) >= 3
    assert log["completion_tokens"] == answer.body["usage"]["completion_tokens"]


async def test_back_to_back_requests_are_each_logged_once_the_last_one_too(local_subnet):
    """A response's log waits in the worker's backlog for the next request's miner call (``api.backlog``):
    one request after another, every log still arrives once, under its own id, and the last one, which no
    request follows, arrives after the backlog's time limit instead of waiting for company."""
    key, key_id = await new_key(local_subnet)
    good = uid_of(local_subnet, "good")
    ids = []
    for _ in range(12):
        answer = await post(local_subnet, key, "/v1/chat/completions",
                            {"model": "default", "messages": MESSAGES, "max_tokens": 4, "uids": [good]})
        ids.append(answer.body["id"])

    async def all_logged():
        logs = (await admin(local_subnet, "GET", f"/logs?key={key_id}&limit=100")).body["logs"]
        return logs if len(logs) >= len(ids) else None

    logs = await eventually(all_logged, timeout=15)
    assert logs is not None, "not every request was logged"
    assert sorted(log["request_id"] for log in logs) == sorted(ids)
    assert all(log["status"] == 200 and log["miner_uid"] == good for log in logs)

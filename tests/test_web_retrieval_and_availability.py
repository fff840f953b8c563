"""A subnet whose miners differ: web retrieval against real pages, availabilities, models, mixture latency,
moderation (fail-closed) and CORS.

Miners (uid: behaviour, models, tasks):
  1 good      builtin-small, builtin-large   Inference, WebQuestionAnswering, WebRetrieval
  2 slow      builtin-small                  Inference, WebQuestionAnswering
  3 slow      builtin-large                  Inference
  4 junk_urls builtin-small                  WebRetrieval   (URLs that lead nowhere)
  5 off_page  builtin-small                  WebRetrieval   (``relevant`` text that is not on the page)
The validator's synthetic rounds are web retrieval only, so its scores for uids 4 and 5 say how it judged them.
"""

from __future__ import annotations

import asyncio
import html
import re
import time

import aiohttp
import openai
import pytest
from aiohttp import web
from conftest_miner_helpers import aiohttp_thread
from openai import OpenAI
from test_scoring_forwarding import wait_for_item

from shared.signed_http import SignedClient

ALL = "InferenceTask,WebQuestionAnsweringTask,WebRetrievalTask"
MINERS = [
    ("good", {"miner_models": "builtin-small,builtin-large", "miner_tasks": ALL}),
    ("slow", {"miner_models": "builtin-small", "miner_tasks": "InferenceTask,WebQuestionAnsweringTask"}),
    ("slow", {"miner_models": "builtin-large", "miner_tasks": "InferenceTask"}),
    ("junk_urls", {"miner_tasks": "WebRetrievalTask"}),
    ("off_page", {"miner_tasks": "WebRetrievalTask"}),
]
ORIGIN = "https://app.example"
QUERY = "Why does a validator need a permit?"
MESSAGES = [{"role": "user", "content": "What does a miner do?"}]
REASONING_TIMEOUT = 4.0  # half for the steps, the rest for the answer: a slow miner fits one step


@pytest.fixture(scope="module")
def moderation():
    """A real OpenAI-compatible moderation endpoint: flags 'forbidden', answers 500 while ``down``."""
    state = {"down": False, "seen": []}

    async def moderations(request: web.Request) -> web.Response:
        if state["down"]:
            return web.json_response({"error": {"message": "down"}}, status=500)
        texts = (await request.json())["input"]
        state["seen"].extend(texts)
        return web.json_response({"results": [{"flagged": "forbidden" in t, "categories": {"harassment": True}}
                                              for t in texts]})

    app = web.Application()
    app.router.add_post("/v1/moderations", moderations)
    with aiohttp_thread(app) as url:
        state["url"] = url + "/v1/moderations"
        yield state


@pytest.fixture(scope="module")
def subnet(tmp_path_factory, subnet_factory, moderation):
    net = subnet_factory(tmp_path_factory.mktemp("webnet"), behaviours=[b for b, _ in MINERS],
                         miner_settings=[s for _, s in MINERS], api_workers=1,
                         validator_settings={"task_mix": "WebRetrievalTask:1", "synthetic_interval_seconds": 0.3},
                         extra_env={"MODERATION_URL": moderation["url"], "MODERATION_FAIL_OPEN": "false",
                                    "CORS_ORIGINS": ORIGIN, "REASONING_TIMEOUT": str(REASONING_TIMEOUT),
                                    "UNKNOWN_MODEL": "reject"})
    yield net
    net.stop()


@pytest.fixture(scope="module")
def key(subnet) -> str:
    return subnet.create_api_key("web")


@pytest.fixture(scope="module")
def client(subnet, key) -> OpenAI:
    return OpenAI(base_url=subnet.api_url + "/v1", api_key=key, max_retries=0, timeout=30)


async def api(net, key: str, method: str, path: str, body=None, headers=None) -> tuple[int, object]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, net.api_url + path, json=body,
                                   headers={"Authorization": f"Bearer {key}", **(headers or {})}) as response:
            return response.status, await response.json()


async def page_text(url: str) -> str:
    """The page as a reader sees it (independently of the code under test)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.status == 200, url
            raw = await response.text()
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", raw)).split())


def uid(net, behaviour: str) -> int:
    return net.member("miner", behaviour).uid


# -- web retrieval -------------------------------------------------------------------------------------

async def test_web_retrieval_returns_only_what_the_pages_say(subnet, key):
    status, answer = await api(subnet, key, "GET", "/web_retrieval?search_query=" + QUERY.replace(" ", "+")
                               + "&n_miners=3&n_results=3&max_response_time=5")
    assert status == 200, answer
    results = answer["results"]
    assert 1 <= len(results) <= 3 and len({r["url"] for r in results}) == len(results)
    for result in results:
        assert " ".join(result["content"].split()) in await page_text(result["url"])
        assert result["relevant"] in result["content"]
    assert "validator permit" in results[0]["relevant"]  # best first
    miners = {m["uid"]: m for m in answer["miners"]}
    assert set(miners) == {uid(subnet, "good"), uid(subnet, "junk_urls"), uid(subnet, "off_page")}
    assert miners[uid(subnet, "junk_urls")]["returned"] == 3 and miners[uid(subnet, "junk_urls")]["accepted"] == 0
    assert miners[uid(subnet, "off_page")]["returned"] == 3 and miners[uid(subnet, "off_page")]["accepted"] == 0
    assert {r["miner_uid"] for r in results} == {uid(subnet, "good")}


async def test_web_retrieval_post_and_uids(subnet, key):
    cheats = [uid(subnet, "junk_urls"), uid(subnet, "off_page")]
    status, answer = await api(subnet, key, "POST", "/web_retrieval",
                               {"search_query": QUERY, "n_results": 2, "uids": cheats})
    assert status == 200 and answer["results"] == []  # both answered; nothing they said holds up
    assert all(m["status"] == "ok" and m["returned"] == 2 for m in answer["miners"])

    status, answer = await api(subnet, key, "GET", f"/web_retrieval?search_query=volcano&n_results=2"
                               f"&uids={uid(subnet, 'good')},{cheats[0]}")
    assert status == 200 and len(answer["results"]) == 2 and "olcano" in answer["results"][0]["content"]


async def test_web_retrieval_bad_input(subnet, key):
    for method, path, body, expected in (
        ("GET", "/web_retrieval", None, 422),
        ("GET", "/web_retrieval?search_query=x&n_results=0", None, 422),
        ("POST", "/web_retrieval", {"search_query": "   "}, 422),
        ("POST", "/web_retrieval", {"search_query": "x", "max_response_time": -1}, 422),
        ("POST", "/web_retrieval", {"search_query": "x", "uids": [1, 1]}, 422),
        ("POST", "/web_retrieval", {"search_query": "x", "uids": [999]}, 400),
    ):
        status, answer = await api(subnet, key, method, path, body)
        assert status == expected and set(answer["error"]) == {"message", "type", "code"}, (path, body, answer)
    status, answer = await api(subnet, "sk-sn-nope", "POST", "/web_retrieval", {"search_query": "x"})
    assert status == 401


async def test_the_validator_scores_web_retrieval_by_reading_the_pages(subnet, key, signer_for):
    signer = signer_for(subnet, "validator")
    status, answer = await api(subnet, key, "POST", "/web_retrieval", {"search_query": QUERY, "n_results": 2})
    assert status == 200
    item = await wait_for_item(subnet, signer, answer["id"])  # every miner's answer, junk included
    assert item["task"] == "WebRetrievalTask" and (item["search_query"], item["n_results"]) == (QUERY, 2)
    returned = {r["uid"]: r["results"] for r in item["responses"]}
    assert set(returned) == {uid(subnet, b) for b in ("good", "junk_urls", "off_page")}
    assert all(len(results) == 2 for results in returned.values())
    client = SignedClient(signer)
    try:
        deadline = time.monotonic() + 20
        while True:
            table = await client.get_json(subnet.validator_url, "/scores", receiver=signer.hotkey)
            rows = {row["uid"]: row for row in table["scores"]}
            judged = [uid(subnet, b) for b in ("good", "junk_urls", "off_page")]
            scored = (await client.get_json(subnet.validator_url, f"/scoring/items/{answer['id']}",
                                            receiver=signer.hotkey))["scored"]
            if scored and all(rows.get(u, {}).get("rewards", 0) >= 3 for u in judged) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    finally:
        await client.close()
    assert scored, "the forwarded web retrieval item was never scored"
    assert rows[uid(subnet, "good")]["score"] > 0.05, rows
    assert rows[uid(subnet, "junk_urls")]["score"] == 0.0 and rows[uid(subnet, "off_page")]["score"] == 0.0, rows


# -- availabilities and models -------------------------------------------------------------------------

async def test_miner_availabilities_say_what_each_miner_serves(subnet, key):
    status, answer = await api(subnet, key, "POST", "/miner_availabilities/miner_availabilities", [1, 3, 4, 999])
    assert status == 200 and answer["999"] is None
    assert answer["1"]["llm_model_availabilities"] == {"builtin-small": True, "builtin-large": True}
    assert answer["3"]["task_availabilities"]["InferenceTask"] is True
    assert answer["3"]["task_availabilities"]["WebRetrievalTask"] is False
    assert answer["4"]["task_availabilities"] == {"InferenceTask": False, "WebQuestionAnsweringTask": False,
                                                  "ProgrammingTask": False, "WebRetrievalTask": True,
                                                  "MultiStepReasoningTask": False}
    status, everyone = await api(subnet, key, "POST", "/miner_availabilities/miner_availabilities")
    assert status == 200 and set(everyone) == {str(m.uid) for m in subnet.members}
    assert everyone["0"] is None  # the validator serves nothing

    async def available(query: str) -> list[int]:
        status, uids = await api(subnet, key, "GET", "/miner_availabilities/get_available_miners" + query)
        assert status == 200, uids
        return uids

    assert await available("?task=WebRetrievalTask") == [1, 4, 5]
    assert await available("?model=builtin-large") == [1, 3]
    assert await available("?task=WebQuestionAnsweringTask&model=builtin-small") == [1, 2]
    assert await available("?task=InferenceTask&k=2") == [1, 2]
    assert await available("?task=MultiStepReasoningTask") == []
    status, answer = await api(subnet, key, "GET", "/miner_availabilities/get_available_miners?task=Nope")
    assert status == 422 and "Nope" in answer["error"]["message"]
    status, _ = await api(subnet, "", "GET", "/miner_availabilities/get_available_miners")
    assert status == 401
    status, answer = await api(subnet, key, "POST", "/miner_availabilities/miner_availabilities", {"uids": 1})
    assert status == 422


def test_models_and_model_routing(client):
    assert {m.id: m.miners for m in client.models.list().data} == {"builtin-small": 4, "builtin-large": 2}
    for _ in range(4):
        completion = client.chat.completions.create(model="builtin-large", messages=MESSAGES, max_tokens=4)
        assert completion.miner_uid in (1, 3)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="builtin-huge", messages=MESSAGES)
    assert missing.value.body["code"] == "model_not_found"


# -- mixture latency -------------------------------------------------------------------------------------

def test_mixture_takes_the_slowest_miner_not_the_sum(subnet, client, signer_for):
    first_round = [uid(subnet, "good"), *[m.uid for m in subnet.members if m.behaviour == "slow"]]

    def seconds(**extra) -> tuple[float, object]:
        started = time.perf_counter()
        reply = client.chat.completions.create(model="default", messages=MESSAGES, extra_body=extra)
        if extra.get("stream"):
            reply = list(reply)
        return time.perf_counter() - started, reply

    seconds(uids=[first_round[0]])  # warm the connections, so no measurement pays for that
    singles = {u: seconds(uids=[u])[0] for u in first_round}
    mixture, completion = seconds(uids=first_round, mixture=True)
    streamed, _ = seconds(uids=first_round, mixture=True, stream=True)
    print(f"single-miner seconds {singles}; mixture {mixture:.2f} s, streamed {streamed:.2f} s")
    # Asked one after another, the first round alone would cost the sum of the single-miner times. At once,
    # it saves at least half of the second-slowest miner's time (both slow miners take 1.5 s here).
    saving = sorted(singles.values())[-2] / 2
    assert mixture + saving < sum(singles.values()), (singles, mixture)
    assert streamed + saving < sum(singles.values()), (singles, streamed)
    item = asyncio.run(wait_for_item(subnet, signer_for(subnet, "validator"), completion.id + "-round1"))
    assert sorted(r["uid"] for r in item["responses"] if r["status"] == "ok") == sorted(first_round)  # slow ones too


def test_test_time_inference_stops_reasoning_when_its_time_is_spent(subnet, client, signer_for):
    slow = next(m.uid for m in subnet.members if m.behaviour == "slow")
    started = time.perf_counter()
    completion = client.chat.completions.create(model="default", messages=MESSAGES,
                                                extra_body={"test_time_inference": True, "uids": [slow]})
    elapsed = time.perf_counter() - started
    steps = completion.model_extra["steps"]
    assert 1 <= len(steps) < 4 and "Answer: " in completion.choices[0].message.content  # cut short, answered
    assert elapsed < REASONING_TIMEOUT + 2.0, elapsed
    cut = asyncio.run(wait_for_item(subnet, signer_for(subnet, "validator"),
                                    f"{completion.id}-step{len(steps) + 1}"))
    assert [r["status"] for r in cut["responses"]] == ["timeout"]  # the step that ran out of time, scored 0


# -- moderation and CORS -----------------------------------------------------------------------------------

async def test_moderation_screens_prompts_and_fails_closed(subnet, key, client, moderation):
    with pytest.raises(openai.BadRequestError) as flagged:
        await asyncio.to_thread(client.chat.completions.create, model="default",
                                messages=[{"role": "user", "content": "something forbidden"}])
    assert flagged.value.body["code"] == "content_flagged" and "harassment" in flagged.value.body["message"]
    status, answer = await api(subnet, key, "POST", "/web_retrieval", {"search_query": "forbidden pages"})
    assert status == 400 and answer["error"]["code"] == "content_flagged"
    assert "something forbidden" in moderation["seen"]

    moderation["down"] = True
    try:
        with pytest.raises(openai.InternalServerError) as closed:
            await asyncio.to_thread(client.chat.completions.create, model="default", messages=MESSAGES)
        assert closed.value.status_code == 503 and closed.value.body["code"] == "moderation_unavailable"
    finally:
        moderation["down"] = False
    assert (await asyncio.to_thread(client.chat.completions.create, model="default", messages=MESSAGES,
                                    max_tokens=3)).choices[0].message.content


async def test_cors_allows_only_the_configured_origins(subnet, key):
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    async with aiohttp.ClientSession() as session:
        async with session.options(subnet.api_url + "/v1/chat/completions",
                                   headers={"Origin": ORIGIN, **preflight}) as allowed:
            assert allowed.status == 200 and allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
        async with session.options(subnet.api_url + "/v1/chat/completions",
                                   headers={"Origin": "https://evil.example", **preflight}) as refused:
            assert "Access-Control-Allow-Origin" not in refused.headers
        async with session.get(subnet.api_url + "/v1/models",
                               headers={"Origin": ORIGIN, "Authorization": f"Bearer {key}"}) as simple:
            assert simple.status == 200 and simple.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert "X-Request-Id" in simple.headers["Access-Control-Expose-Headers"]

"""Web retrieval's parts against real pages on 127.0.0.1, the moderation hook, and the conversation store.

No subnet here: the page server runs in a thread of the test process, the
fetches, the validator's reward and the moderation client are real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from conftest_miner_helpers import aiohttp_thread, bound_socket, signed, sse_events, uvicorn_thread

from api.errors import ApiError
from api.moderation import Moderator, screen
from localnet.launcher import free_port
from localnet.web_pages import PageServer
from miner.app import create_app
from miner.settings import MinerSettings
from miner.web_behaviours import shape_results
from miner.web_index import WebIndex
from shared.auth import Signer
from shared.schemas import MinerChatRequest, MinerResponse, ScoringItem
from shared.wallet import ensure_wallet, load_hotkey
from shared.web_check import PageFetcher, content_on_page, page_text, parse_result
from validator.rewards import Rules, judge_item, reward_item
from validator.web_retrieval_reward import WebJudge

QUERY = "Why does a validator need a permit?"


@pytest.fixture(scope="module")
def pages():
    server = PageServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def index(pages) -> WebIndex:
    return WebIndex(pages.base_url)


def fetch(urls, **limits) -> dict:
    return asyncio.run(PageFetcher(timeout=3, allow_private=limits.pop("allow_private", True), **limits)
                       .fetch_many(urls))


def test_the_index_answers_with_real_pages(index):
    results = index.search(QUERY, 3)
    assert len({r["url"] for r in results}) == 3 and "validators" in results[0]["url"]
    got = fetch([r["url"] for r in results])
    for r in results:
        assert content_on_page(r["content"], got[r["url"]])
        assert r["relevant"] in r["content"] and parse_result(r) is not None


def test_malformed_results_are_refused():
    good = {"url": "http://example.org/a", "content": "One. Two three.", "relevant": "Two  three."}
    assert parse_result(good) is not None  # whitespace does not decide
    for broken in ({**good, "url": "ftp://example.org/a"}, {**good, "url": "not a url"}, {**good, "url": "http:///x"},
                   {**good, "relevant": "Four."}, {**good, "content": 7}, {"url": good["url"]}, "text", None,
                   {**good, "relevant": ""}):
        assert parse_result(broken) is None, broken


def test_page_text_decodes_entities_and_skips_scripts():
    html = "<html><head><style>p{}</style><script>var x = 1;</script></head><body><p>Tom &amp; Jerry's\n  cat</p>"
    assert page_text(html) == "Tom & Jerry's cat"


def test_fetching_is_bounded(pages, index):
    url = index.search(QUERY, 1)[0]["url"]
    assert fetch([url], allow_private=False)[url] is None  # 127.0.0.1 is private: refused unless allowed
    assert fetch([url], max_bytes=100)[url] is None  # larger than the cap
    missing = pages.base_url + "/pages/nothing-here.html"
    closed = f"http://127.0.0.1:{free_port()}/x.html"
    assert fetch([missing, closed, "file:///etc/passwd"]) == {missing: None, closed: None, "file:///etc/passwd": None}


def test_demo_behaviours_break_results_the_way_they_say(index):
    results = index.search(QUERY, 2)
    junk = shape_results("junk_urls", results, QUERY, index)
    assert parse_result(junk[0]) is None  # malformed URL
    assert parse_result(junk[1]) is not None and fetch([junk[1]["url"]])[junk[1]["url"]] is None  # leads nowhere
    off_page = shape_results("off_page", results, QUERY, index)
    assert all(parse_result(r) is None for r in off_page)  # relevant is not part of the content
    noisy = shape_results("noisy", results, QUERY, index)
    assert all(parse_result(r) is not None for r in noisy)  # well formed...
    got = fetch([r["url"] for r in noisy])
    assert not any(content_on_page(r["content"], got[r["url"]]) for r in noisy)  # ...but not what the page says


def web_item(answers: dict[int, object], n_results: int = 2, source: str = "organic") -> ScoringItem:
    responses = [MinerResponse(uid=uid, hotkey=f"hk-{uid}", status="ok" if results is not None else "error",
                               results=results, timings=[0.5]) for uid, results in answers.items()]
    return ScoringItem(request_id="web-1", source=source, task="WebRetrievalTask", created_at=time.time(),
                       request=MinerChatRequest(messages=[{"role": "user", "content": QUERY}], task="WebRetrievalTask"),
                       responses=responses, search_query=QUERY, n_results=n_results)


def judge(**options) -> WebJudge:
    return WebJudge(PageFetcher(timeout=3, allow_private=True), **options)


def test_validator_reward_reads_the_pages(index):
    good = index.search(QUERY, 2)
    answers = {
        1: good,
        2: [good[0], good[0]],  # the same page twice: gaming the count
        3: shape_results("junk_urls", good, QUERY, index),
        4: shape_results("off_page", good, QUERY, index),
        5: shape_results("noisy", good, QUERY, index),
        6: None,  # failed
        7: [{"url": 1}, "garbage"],
        8: good[:1],  # the page that answers, alone
        9: good[1:],  # a true page, on topic, that does not answer
    }
    rewards = reward_item(web_item(answers), web=judge())
    speed = Rules().speed_scale / (Rules().speed_scale + 0.5)  # each answer took 0.5 s
    assert rewards[1] > 0.5 and rewards[8] == pytest.approx(0.5 * speed)  # half the results, full marks each
    assert 0 < rewards[9] <= 0.5 * rewards[8]
    assert rewards[2] == rewards[3] == rewards[4] == rewards[5] == rewards[6] == rewards[7] == 0.0
    chat_style = web_item({1: None})  # a chat answer: the JSON list as text
    chat_style.responses[0] = MinerResponse(uid=1, hotkey="hk-1", status="ok", chunks=[json.dumps(good)],
                                            timings=[0.5])
    assert reward_item(chat_style, web=judge())[1] == pytest.approx(rewards[1])
    assert reward_item(web_item(answers)) == {}  # no fetcher: no verdict


def test_duplicate_urls_self_hosted_pages_and_page_farms_are_caught(index, pages):
    good = index.search(QUERY, 3)
    other_host = pages.base_url.replace("127.0.0.1", "localhost")
    answers = {
        1: good,
        2: [good[0], {**good[0], "url": good[0]["url"].replace("http://", "HTTPS://") + "?v=2#top"}],
        3: [{**good[0], "url": good[0]["url"].replace(pages.base_url, other_host)}],  # the same page, elsewhere
        4: good[:1] * 1 + [{**good[0], "url": good[0]["url"] + "/"}],  # a trailing slash is the same page too
    }
    allowed = judge(allowed_hosts=[pages.base_url.split("//")[1]])
    judgement = judge_item(web_item(answers, n_results=3, source="synthetic"), Rules(penalty=2.0), web=allowed)
    assert set(judgement.caught) == {2, 3, 4}
    assert judgement.rewards[2] == judgement.rewards[3] == judgement.rewards[4] == -2.0
    assert judgement.rewards[1] > 0.4
    # without an allow-list the copy on another host is a true page, but a per-host cap bounds a farm on one host
    capped = judge(max_per_host=1)
    rewards = reward_item(web_item({1: good, 3: answers[3]}, n_results=3), web=capped)
    assert rewards[1] == pytest.approx(rewards[3])  # only one result per host counts: the answering page


# -- the miner's /web_retrieval ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def web_miner(tmp_path_factory, pages):
    root = tmp_path_factory.mktemp("web-miner")
    wallets = str(root / "wallets")
    keys = {name: ensure_wallet(name, "default", wallets) for name in ("validator", "miner")}
    neurons = [{"uid": uid, "hotkey": hotkey, "coldkey": coldkey, "stake": 1000.0, "axon": None,
                "validator_permit": name == "validator"} for uid, (name, (coldkey, hotkey)) in enumerate(keys.items())]
    (root / "subnet.json").write_text(json.dumps({"netuid": 1, "block": 1, "neurons": neurons}))
    sock = bound_socket()
    settings = MinerSettings(
        _env_file=None, wallet_name="miner", wallet_hotkey="default", wallet_path=wallets, chain="local",
        subnet_file=str(root / "subnet.json"), data_dir=str(root / "data"), redis_url="",
        miner_port=sock.getsockname()[1], miner_serve_on_start=False, miner_tasks="InferenceTask,WebRetrievalTask",
        miner_web_base_url=pages.base_url)
    with uvicorn_thread(create_app(settings), sock) as url:
        yield SimpleNamespace(url=url, hotkey=keys["miner"][1],
                              validator=Signer(load_hotkey("validator", "default", wallets)))


async def miner_call(miner, path: str, body, signer=None) -> tuple[int, str]:
    raw, headers = signed(signer or miner.validator, "POST", path, body, miner.hotkey)
    async with aiohttp.ClientSession() as session:
        async with session.post(miner.url + path, data=raw, headers=headers) as response:
            return response.status, await response.text()


async def test_the_miner_answers_web_retrieval_signed(web_miner, index):
    status, text = await miner_call(web_miner, "/web_retrieval", {"search_query": QUERY, "n_results": 2})
    assert status == 200 and json.loads(text) == index.search(QUERY, 2)
    status, text = await miner_call(web_miner, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": QUERY}], "task": "WebRetrievalTask", "n_results": 2, "stream": True})
    chunks = [json.loads(e) for e in sse_events(text) if e != "[DONE]"]
    answer = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert status == 200 and json.loads(answer) == index.search(QUERY, 2)  # the subnet's chat form


async def test_the_miner_refuses_bad_web_retrieval_calls(web_miner):
    status, text = await miner_call(web_miner, "/web_retrieval", {"search_query": "", "n_results": 2})
    assert status == 422 and json.loads(text)["error"]["type"] == "invalid_request_error"
    status, _ = await miner_call(web_miner, "/web_retrieval", {"search_query": "x", "n_results": 21})
    assert status == 422
    async with aiohttp.ClientSession() as session:
        async with session.post(web_miner.url + "/web_retrieval", json={"search_query": "x"}) as unsigned:
            assert unsigned.status == 401


# -- moderation ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moderation_server():
    seen: list = []

    async def moderations(request: web.Request) -> web.Response:
        payload = await request.json()
        seen.append((request.headers.get("Authorization"), payload))
        results = [{"flagged": "forbidden" in text, "categories": {"violence": "forbidden" in text}}
                   for text in payload["input"]]
        return web.json_response({"id": "modr-1", "model": payload.get("model", "m"), "results": results})

    app = web.Application()
    app.router.add_post("/v1/moderations", moderations)
    with aiohttp_thread(app) as url:
        yield url + "/v1/moderations", seen


def screen_with(url: str, texts: list[str], **options) -> None:
    async def run() -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            moderator = Moderator(session, url, timeout=2, **options)
            await screen(moderator, texts)

    asyncio.run(run())


def test_moderation_flags_and_passes(moderation_server):
    url, seen = moderation_server
    screen_with(url, ["hello", "fine"], api_key="mod-key", model="omni")
    assert seen[-1] == ("Bearer mod-key", {"input": ["hello", "fine"], "model": "omni"})
    with pytest.raises(ApiError) as flagged:
        screen_with(url, ["hello", "something forbidden"])
    assert (flagged.value.status, flagged.value.code) == (400, "content_flagged")
    assert "violence" in flagged.value.message


def test_moderation_unreachable_fails_open_or_closed():
    nowhere = f"http://127.0.0.1:{free_port()}/v1/moderations"
    screen_with(nowhere, ["anything"], fail_open=True)  # allowed
    with pytest.raises(ApiError) as closed:
        screen_with(nowhere, ["anything"], fail_open=False)
    assert (closed.value.status, closed.value.code) == (503, "moderation_unavailable")

"""The reference miner over real HTTP: uvicorn servers, real wallets, a local subnet file, btauth/1."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from contextlib import ExitStack
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from conftest_miner_helpers import FakeUpstream, aiohttp_thread, bound_socket, signed, sse_events, uvicorn_thread

from miner.access import caller_policy
from miner.app import create_app
from miner.backends.builtin import canonical_key, count_tokens, generate_completion, generate_tokens
from miner.behaviours import broken_mode
from miner.settings import MinerSettings
from shared.auth import Signer
from shared.builtin_generator import prompt_tokens as count_prompt
from shared.chain import ChainError, Neuron, SubnetState
from shared.chain.cache import MetagraphCache
from shared.coalesced_writes import CoalescingHttpProtocol
from shared.schemas import TASKS, MinerChatRequest, SamplingParameters
from shared.wallet import ensure_wallet, load_hotkey

MODEL = "builtin-small"
CHAT = "/v1/chat/completions"
QUESTION = "What is the capital of France?"
MINERS = ("good", "noisy", "slow", "broken", "upstream")
DEFAULT_SAMPLING = SamplingParameters().model_dump()


def user(text: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": text}]


def expected_text(seed: int, sampling: dict | None = None, model: str = MODEL) -> str:
    return "".join(generate_tokens(user(), model, seed, {**DEFAULT_SAMPLING, **(sampling or {})}))


@pytest.fixture(scope="module")
def subnet(tmp_path_factory):
    root = tmp_path_factory.mktemp("miner")
    wallets = str(root / "wallets")
    keys = {name: ensure_wallet(name, "default", wallets) for name in ("validator", "outsider", *MINERS)}
    neurons = [
        {"uid": uid, "hotkey": hotkey, "coldkey": coldkey, "stake": 1000.0 if name == "validator" else 0.0,
         "validator_permit": name == "validator", "axon": None}
        for uid, (name, (coldkey, hotkey)) in enumerate(keys.items())
    ]
    subnet_file = root / "subnet.json"
    subnet_file.write_text(json.dumps({"netuid": 1, "block": 1, "neurons": neurons}))
    return SimpleNamespace(
        root=root,
        wallets=wallets,
        file=subnet_file,
        hotkeys={name: hotkey for name, (_, hotkey) in keys.items()},
        validator=Signer(load_hotkey("validator", "default", wallets)),
        outsider=Signer(load_hotkey("outsider", "default", wallets)),
    )


def miner_settings(subnet, name: str, port: int, **extra) -> MinerSettings:
    values = dict(
        wallet_name=name, wallet_hotkey="default", wallet_path=subnet.wallets, chain="local",
        subnet_file=str(subnet.file), data_dir=str(subnet.root / "data"), redis_url="", miner_host="127.0.0.1",
        miner_port=port, miner_models=MODEL, miner_tasks="InferenceTask", miner_backend="builtin",
        miner_behaviour=name if name in ("good", "noisy", "slow", "broken") else "good",
        require_validator_permit=True, allowed_hotkeys="", metagraph_refresh_seconds=0.5, miner_chunk_delay=0.0,
    )
    values.update(extra)
    return MinerSettings(_env_file=None, **values)


@pytest.fixture(scope="module")
def upstream():
    fake = FakeUpstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.chat)
    with aiohttp_thread(app) as url:
        fake.url = url
        yield fake


@pytest.fixture(scope="module")
def miners(subnet, upstream):
    extra = {
        "noisy": {"allowed_hotkeys": subnet.hotkeys["outsider"]},
        "upstream": {"miner_backend": "upstream", "upstream_url": f"{upstream.url}/v1", "upstream_api_key": "sk-up",
                     "miner_models": "up-model,up-fail,up-midfail,up-ragged,up-slow,up-json,up-text,up-cr"},
    }
    with ExitStack() as stack:
        running = {}
        for name in MINERS:
            sock = bound_socket()
            port = sock.getsockname()[1]
            app = create_app(miner_settings(subnet, name, port, **extra.get(name, {})))
            url = stack.enter_context(uvicorn_thread(app, sock, http=CoalescingHttpProtocol))  # as python -m miner
            running[name] = SimpleNamespace(url=url, port=port, hotkey=subnet.hotkeys[name])
        yield running


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http, miner, signer, body=None, *, method="POST", path=CHAT, receiver=None):
    """Send a signed request; return (status, content type, text)."""
    raw, headers = signed(signer, method, path, body, receiver or miner.hotkey)
    async with http.request(method, miner.url + path, data=raw or None, headers=headers) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def chat_body(seed: int = 1, stream: bool = False, **extra) -> dict:
    return {"messages": user(), "model": MODEL, "seed": seed, "stream": stream, **extra}


def streamed(text: str) -> tuple[list[dict], list[str]]:
    """(parsed chunks, raw event data) of an SSE body."""
    events = sse_events(text)
    return [json.loads(e) for e in events if e != "[DONE]"], events


def content_of(chunks: list[dict], index: int = 0) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content", "")
        for c in chunks
        if c["choices"] and c["choices"][0]["index"] == index
    )


# --- start-up ----------------------------------------------------------------------------------------------


async def test_health_is_unsigned_and_miners_advertise_their_address(http, miners, subnet):
    async with http.get(miners["good"].url + "/health") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok", "hotkey": miners["good"].hotkey}
    axons = {n["hotkey"]: n["axon"] for n in json.loads(subnet.file.read_text())["neurons"]}
    for miner in miners.values():
        assert axons[miner.hotkey] == f"127.0.0.1:{miner.port}"


# --- chat, builtin backend ---------------------------------------------------------------------------------


async def test_non_streamed_chat_is_the_builtin_output(http, miners, subnet):
    status, ctype, text = await call(http, miners["good"], subnet.validator, chat_body(seed=5))
    assert status == 200 and ctype.startswith("application/json")
    body = json.loads(text)
    assert body["object"] == "chat.completion" and body["model"] == MODEL and body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": expected_text(5)}
    assert choice["finish_reason"] == "stop"
    completion_tokens = count_tokens(expected_text(5))
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": completion_tokens,
                             "total_tokens": 6 + completion_tokens}


async def test_streamed_chat_shape_usage_and_done(http, miners, subnet):
    body = chat_body(seed=7, stream=True, stream_options={"include_usage": True})
    status, ctype, text = await call(http, miners["good"], subnet.validator, body)
    assert status == 200 and ctype.startswith("text/event-stream")
    chunks, events = streamed(text)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    tokens = generate_tokens(user(), MODEL, 7, DEFAULT_SAMPLING)
    content_chunks = [c for c in chunks if c["choices"] and "content" in c["choices"][0]["delta"]]
    assert [c["choices"][0]["delta"]["content"] for c in content_chunks] == tokens  # one chunk per token
    assert content_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in content_chunks[1:])
    for c in chunks:
        assert c["object"] == "chat.completion.chunk" and c["model"] == MODEL and c["id"] == chunks[0]["id"]
        assert isinstance(c["created"], int)
    finish = chunks[-2]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": len(tokens),
                                   "total_tokens": 6 + len(tokens)}


async def test_stream_without_include_usage_has_no_usage_chunk(http, miners, subnet):
    status, _, text = await call(http, miners["good"], subnet.validator, chat_body(seed=7, stream=True))
    chunks, events = streamed(text)
    assert status == 200 and events[-1] == "[DONE]"
    assert all("usage" not in c and c["choices"] for c in chunks)
    assert content_of(chunks) == expected_text(7)


async def test_same_seed_same_text_different_seed_different_text(http, miners, subnet):
    texts = []
    for seed in (11, 11, 12):
        _, _, text = await call(http, miners["good"], subnet.validator, chat_body(seed=seed, stream=True))
        texts.append(content_of(streamed(text)[0]))
    assert texts[0] == texts[1] == expected_text(11)
    assert texts[2] != texts[0]


async def test_max_new_tokens_caps_with_finish_reason_length(http, miners, subnet):
    body = chat_body(seed=3, stream=True, sampling_parameters={"max_new_tokens": 4})
    _, _, text = await call(http, miners["good"], subnet.validator, body)
    chunks, _ = streamed(text)
    assert content_of(chunks) == expected_text(3, {"max_new_tokens": 4})
    assert count_tokens(content_of(chunks)) == 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_n_choices_use_consecutive_seeds(http, miners, subnet):
    _, _, text = await call(http, miners["good"], subnet.validator, chat_body(seed=20, stream=True, n=2))
    chunks, _ = streamed(text)
    assert content_of(chunks, 0) == expected_text(20)
    assert content_of(chunks, 1) == expected_text(21)
    finishes = [c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"]]
    assert [f["index"] for f in finishes] == [0, 1]
    status, _, text = await call(http, miners["good"], subnet.validator, chat_body(seed=20, n=2))
    assert [c["message"]["content"] for c in json.loads(text)["choices"]] == [expected_text(20), expected_text(21)]


async def test_unserved_model_or_task_is_400_and_bad_body_is_422(http, miners, subnet):
    good, vali = miners["good"], subnet.validator
    status, _, text = await call(http, good, vali, chat_body(model="gpt-99"))
    assert status == 400 and json.loads(text)["error"]["code"] == "model_not_found"
    status, _, text = await call(http, good, vali, chat_body(task="ProgrammingTask"))
    assert status == 400 and json.loads(text)["error"]["code"] == "task_not_served"
    status, _, text = await call(http, good, vali, {"messages": [], "seed": 1})
    error = json.loads(text)["error"]
    assert status == 422 and error["type"] == "invalid_request_error" and "messages" in error["message"]
    status, _, text = await call(http, good, vali, b"{not json")
    assert status == 422 and "error" in json.loads(text)


async def test_availability(http, miners, subnet):
    status, _, text = await call(http, miners["good"], subnet.validator, method="GET", path="/availability")
    assert status == 200
    body = json.loads(text)
    assert body["task_availabilities"] == {task: task == "InferenceTask" for task in TASKS}
    assert body["llm_model_availabilities"] == {MODEL: True}


# --- who may call ------------------------------------------------------------------------------------------


def assert_error(status: int, text: str, expected_status: int, fragment: str) -> None:
    error = json.loads(text)["error"]
    assert status == expected_status, text
    assert set(error) == {"message", "type", "code"} and fragment in error["message"]


async def test_unsigned_requests_are_401(http, miners):
    async with http.post(miners["good"].url + CHAT, json=chat_body()) as response:
        assert_error(response.status, await response.text(), 401, "MalformedAuth")
    async with http.get(miners["good"].url + "/availability") as response:
        assert_error(response.status, await response.text(), 401, "MalformedAuth")


async def test_replayed_request_is_401(http, miners, subnet):
    raw, headers = signed(subnet.validator, "POST", CHAT, chat_body(), miners["good"].hotkey)
    statuses = []
    for _ in range(2):
        async with http.post(miners["good"].url + CHAT, data=raw, headers=headers) as response:
            statuses.append((response.status, await response.text()))
    assert statuses[0][0] == 200
    assert_error(*statuses[1], 401, "ReplayedRequest")


async def test_tampered_body_is_401(http, miners, subnet):
    raw, headers = signed(subnet.validator, "POST", CHAT, chat_body(seed=1), miners["good"].hotkey)
    tampered = raw.replace(b'"seed": 1', b'"seed": 2')
    assert tampered != raw
    async with http.post(miners["good"].url + CHAT, data=tampered, headers=headers) as response:
        assert_error(response.status, await response.text(), 401, "BadSignature")


async def test_request_signed_for_another_miner_is_401(http, miners, subnet):
    status, _, text = await call(http, miners["good"], subnet.validator, chat_body(), receiver=miners["noisy"].hotkey)
    assert_error(status, text, 401, "WrongReceiver")


async def test_valid_signature_from_a_non_validator_is_403(http, miners, subnet):
    status, _, text = await call(http, miners["good"], subnet.outsider, chat_body())
    assert_error(status, text, 403, "caller is not a permitted validator on this subnet")
    assert json.loads(text)["error"]["type"] == "permission_error"
    status, _, text = await call(http, miners["good"], subnet.outsider, method="GET", path="/availability")
    assert status == 403


async def test_allowed_hotkeys_let_a_non_validator_in(http, miners, subnet):
    status, _, _ = await call(http, miners["noisy"], subnet.outsider, chat_body())
    assert status == 200


def test_what_start_up_built_is_kept_out_of_collections(subnet):
    gc.unfreeze()  # whatever another server in this process froze
    assert gc.get_freeze_count() == 0
    sock = bound_socket()
    app = create_app(miner_settings(subnet, "good", sock.getsockname()[1]))
    with uvicorn_thread(app, sock, http=CoalescingHttpProtocol):
        assert gc.get_freeze_count() > 10_000  # bittensor, FastAPI, the app: a full collection no longer walks them


def test_caller_policy_without_permit_requirement():
    cache = MetagraphCache(chain=None, every_seconds=1)
    neurons = (Neuron(0, "vali", "c", 1.0, 0.0, True, None), Neuron(1, "other", "c", 0.0, 0.0, False, None))
    cache.state = SubnetState(1, 1, neurons)
    strict = caller_policy(MinerSettings(_env_file=None, allowed_hotkeys="friend"), cache)
    assert [strict(hk) for hk in ("vali", "other", "friend", "stranger")] == [True, False, True, False]
    relaxed = caller_policy(MinerSettings(_env_file=None, require_validator_permit=False), cache)
    assert relaxed("stranger")


# --- behaviours --------------------------------------------------------------------------------------------


async def test_noisy_differs_from_good_by_about_a_third_of_words(http, miners, subnet):
    answers = []
    for _ in range(2):
        _, _, text = await call(http, miners["noisy"], subnet.validator, chat_body(seed=9, stream=True))
        answers.append(content_of(streamed(text)[0]))
    assert answers[0] == answers[1]  # deterministic
    good, noisy = expected_text(9).split(), answers[0].split()
    assert len(noisy) == len(good) and noisy != good
    changed = sum(a != b for a, b in zip(good, noisy)) / len(good)
    assert 0.1 <= changed <= 0.6, changed


def seeds_in_mode(mode: str, count: int = 1) -> list[int]:
    return [s for s in range(200) if broken_mode(MinerChatRequest(messages=user(), seed=s), MODEL) == mode][:count]


async def test_broken_answers_500_or_cuts_the_stream_after_one_chunk(http, miners, subnet):
    broken, vali = miners["broken"], subnet.validator
    [error_seed], [cut_seed] = seeds_in_mode("error"), seeds_in_mode("cut")
    status, _, text = await call(http, broken, vali, chat_body(seed=error_seed, stream=True))
    assert_error(status, text, 500, "failed")

    raw, headers = signed(vali, "POST", CHAT, chat_body(seed=cut_seed, stream=True), broken.hotkey)
    received = b""
    async with http.post(broken.url + CHAT, data=raw, headers=headers) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in response.content.iter_any():
                received += data
    events = sse_events(received.decode())
    assert len(events) == 1 and "[DONE]" not in events
    first_token = generate_tokens(user(), MODEL, cut_seed, DEFAULT_SAMPLING)[0]
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == first_token

    status, _, text = await call(http, broken, vali, chat_body(seed=cut_seed, stream=False))
    assert status == 500


async def test_slow_waits_before_the_first_chunk(http, miners, subnet):
    raw, headers = signed(subnet.validator, "POST", CHAT, chat_body(seed=2, stream=True), miners["slow"].hotkey)
    started = time.monotonic()
    async with http.post(miners["slow"].url + CHAT, data=raw, headers=headers) as response:
        first_line = await response.content.readline()
        first_chunk_after = time.monotonic() - started
        text = first_line.decode() + await response.text()
    assert first_line.startswith(b"data: {") and first_chunk_after >= 1.4
    assert content_of(streamed(text)[0]) == expected_text(2)  # slow, but right


# --- upstream backend --------------------------------------------------------------------------------------


async def test_upstream_stream_and_non_stream(http, miners, subnet, upstream):
    miner = miners["upstream"]
    body = {"messages": user(), "model": "up-model", "seed": 4, "stream": True,
            "sampling_parameters": {"temperature": 0.3, "top_p": 0.8, "max_new_tokens": 64},
            "stream_options": {"include_usage": True}}
    status, ctype, text = await call(http, miner, subnet.validator, body)
    assert status == 200 and ctype.startswith("text/event-stream")
    chunks, events = streamed(text)
    assert content_of(chunks) == "Hello from upstream" and events[-1] == "[DONE]"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    headers, sent = upstream.requests[-1]
    assert headers["Authorization"] == "Bearer sk-up"
    assert {k: sent[k] for k in ("model", "temperature", "top_p", "max_tokens", "seed", "stream")} == {
        "model": "up-model", "temperature": 0.3, "top_p": 0.8, "max_tokens": 64, "seed": 4, "stream": True}
    assert sent["messages"] == user()

    status, _, text = await call(http, miner, subnet.validator, {**body, "stream": False, "n": 2})
    answer = json.loads(text)
    assert status == 200 and [c["message"]["content"] for c in answer["choices"]] == ["Hello from upstream"] * 2
    assert [c["finish_reason"] for c in answer["choices"]] == ["stop", "stop"]
    assert answer["usage"]["completion_tokens"] > 0
    # this upstream says no usage for a whole answer: the prompt is counted here, once (n=2)
    assert answer["usage"]["prompt_tokens"] == count_prompt(user()) > 0
    assert [r[1]["seed"] for r in upstream.requests[-2:]] == [4, 5]
    # a whole answer is asked of the upstream as a whole answer: one JSON object, no event per token
    assert [(r[1]["stream"], "stream_options" in r[1]) for r in upstream.requests[-2:]] == [(False, False)] * 2


async def test_a_plain_http_upstream_is_called_over_kept_connections(http, miners, subnet, upstream):
    body = {"messages": user(), "model": "up-model", "stream": True}
    for stream in (True, False, True, False, True, False):  # one after another: each finds an idle connection
        status, _, text = await call(http, miners["upstream"], subnet.validator, {**body, "stream": stream})
        assert status == 200
    # the body's end after [DONE] is read, so the connection is kept; one that arrives later than the
    # miner waits for (a busy machine) costs a new connection, hence "mostly" rather than "always"
    peers = upstream.peers[-6:]
    assert len(set(peers)) <= 2, peers


async def test_an_upstream_that_ignores_stream_is_read_as_a_whole_answer(http, miners, subnet):
    body = {"messages": user(), "model": "up-json", "stream": True}
    status, _, text = await call(http, miners["upstream"], subnet.validator, body)
    chunks, events = streamed(text)
    assert status == 200 and content_of(chunks) == "Hello from upstream" and events[-1] == "[DONE]"


async def test_an_upstream_that_labels_its_answers_text_plain_is_read_as_what_was_asked(http, miners, subnet):
    """Whole answers and streams alike: a JSON body read as events would be an empty answer."""
    body = {"messages": user(), "model": "up-text", "stream": False}
    status, _, text = await call(http, miners["upstream"], subnet.validator, body)
    assert status == 200 and json.loads(text)["choices"][0]["message"]["content"] == "Hello from upstream"
    status, _, text = await call(http, miners["upstream"], subnet.validator, {**body, "stream": True})
    chunks, events = streamed(text)
    assert status == 200 and content_of(chunks) == "Hello from upstream" and events[-1] == "[DONE]"


async def test_upstream_events_with_lone_cr_line_ends_are_read_whole(http, miners, subnet):
    body = {"messages": user(), "model": "up-cr", "stream": True}
    status, _, text = await call(http, miners["upstream"], subnet.validator, body)
    chunks, events = streamed(text)
    assert status == 200 and content_of(chunks) == "Hello from upstream" and events[-1] == "[DONE]"


async def test_upstream_errors_become_clean_miner_errors(http, miners, subnet):
    miner = miners["upstream"]
    status, _, text = await call(http, miner, subnet.validator, {"messages": user(), "model": "up-fail"})
    assert_error(status, text, 502, "upstream answered 503: model overloaded")
    status, _, text = await call(http, miner, subnet.validator, {"messages": user(), "model": "up-midfail"})
    chunks, events = streamed(text)
    assert status == 200 and content_of(chunks[:-1]) == "Hello"
    assert "GPU fell over" in json.loads(events[-2])["error"]["message"] and events[-1] == "[DONE]"


async def test_upstream_events_cut_anywhere_are_read_whole(http, miners, subnet):
    """CRLF line ends, data over two lines, reads that end mid-line: the same three pieces come out."""
    body = {"messages": user(), "model": "up-ragged", "stream": True}
    status, _, text = await call(http, miners["upstream"], subnet.validator, body)
    chunks, events = streamed(text)
    assert status == 200 and content_of(chunks) == "Hello from upstream" and events[-1] == "[DONE]"
    status, _, text = await call(http, miners["upstream"], subnet.validator, {**body, "stream": False})
    assert status == 200 and json.loads(text)["choices"][0]["message"]["content"] == "Hello from upstream"


async def test_a_client_that_leaves_mid_stream_stops_the_upstream_request(http, miners, subnet, upstream):
    miner = miners["upstream"]
    raw, headers = signed(subnet.validator, "POST", CHAT, {"messages": user(), "model": "up-slow", "stream": True},
                          miner.hotkey)
    async with http.post(miner.url + CHAT, data=raw, headers=headers) as response:
        assert (await response.content.readline()).startswith(b"data: {")
        response.close()  # hang up after the first event; the whole answer would take 10 s
    deadline = time.monotonic() + 5
    while "up-slow" not in upstream.abandoned and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert "up-slow" in upstream.abandoned


async def test_other_methods_on_the_chat_path_are_405(http, miners, subnet):
    status, _, text = await call(http, miners["good"], subnet.validator, method="GET")
    assert_error(status, text, 405, "Method Not Allowed")
    assert json.loads(text)["error"]["code"] == "method_not_allowed"


# --- the builtin generator and the metagraph cache, directly -----------------------------------------------


def test_builtin_generator_is_deterministic_and_sized():
    tokens = generate_tokens(user(), MODEL, 1, DEFAULT_SAMPLING)
    assert tokens == generate_tokens(user(), MODEL, 1, dict(DEFAULT_SAMPLING))
    assert 20 <= len(tokens) <= 60 and count_tokens("".join(tokens)) == len(tokens)
    assert all(t.endswith(" ") for t in tokens[:-1]) and not tokens[-1].endswith(" ")
    assert "".join(tokens).split()[1:4] == ["what", "is", "the"]  # restates the question
    lengths = {len(generate_tokens(user(), MODEL, s, DEFAULT_SAMPLING)) for s in range(40)}
    assert len(lengths) > 5
    for change in ({"temperature": 0.0}, {"top_p": 0.5}, {"top_k": 5}, {"max_new_tokens": 999}):
        assert generate_tokens(user(), MODEL, 1, {**DEFAULT_SAMPLING, **change}) != tokens, change
    assert generate_tokens(user(), "other-model", 1, DEFAULT_SAMPLING) != tokens
    assert generate_tokens(user("Something else"), MODEL, 1, DEFAULT_SAMPLING) != tokens
    assert canonical_key(user(), MODEL, 1, {"temperature": 1}) == canonical_key(user(), MODEL, 1, {"temperature": 1.0})
    assert generate_completion(user(), MODEL, 1, {**DEFAULT_SAMPLING, "max_new_tokens": 3})[1] == "length"


async def test_metagraph_cache_keeps_the_last_good_copy():
    good = SubnetState(1, 5, (Neuron(0, "vali", "c", 1.0, 0.0, True, None),))

    class FlakyChain:
        calls = 0

        async def metagraph(self):
            self.calls += 1
            if self.calls > 1:
                raise ChainError("file vanished")
            return good

    cache = MetagraphCache(FlakyChain(), every_seconds=0.01)
    assert await cache.refresh() is True
    assert await cache.refresh() is False
    assert cache.state is good and cache.failures == 1 and cache.has_validator_permit("vali")
    task = asyncio.create_task(cache.run())
    await asyncio.sleep(0.05)
    task.cancel()
    assert cache.state is good and cache.failures > 1

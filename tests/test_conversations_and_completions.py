"""Conversations kept by the API across requests, and legacy text completion through the ``openai`` SDK."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest
from openai import OpenAI
from test_scoring_forwarding import wait_for_item


async def call(net, key: str, method: str, path: str, body=None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, net.api_url + path, json=body,
                                   headers={"Authorization": f"Bearer {key}"}) as response:
            return response.status, await response.json()


async def stream_turn(net, key: str, path: str, body: dict) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.post(net.api_url + path, json={**body, "stream": True},
                                headers={"Authorization": f"Bearer {key}"}) as response:
            assert response.status == 200 and response.headers["X-Conversation-Id"] in path
            events = [line[6:] for line in (await response.text()).split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, events[:-1])
                   if c.get("choices"))


async def test_a_conversation_is_kept_across_requests(local_subnet, api_key, signer_for):
    good = local_subnet.member("miner", "good").uid
    status, created = await call(local_subnet, api_key, "POST", "/v1/conversations", {
        "messages": [{"role": "system", "content": "Answer briefly."}], "metadata": {"topic": "scoring"}})
    assert status == 200 and created["id"].startswith("conv_") and created["metadata"] == {"topic": "scoring"}
    chat = f"/v1/conversations/{created['id']}/chat"

    first_question = {"role": "user", "content": "What is a validator?"}
    status, first = await call(local_subnet, api_key, "POST", chat, {"messages": [first_question], "uids": [good]})
    assert status == 200 and first["conversation_id"] == created["id"]
    first_reply = first["choices"][0]["message"]["content"]

    second_question = {"role": "user", "content": "And what does it do with scores?"}
    status, second = await call(local_subnet, api_key, "POST", chat, {"messages": [second_question], "uids": [good]})
    assert status == 200
    sent = await wait_for_item(local_subnet, signer_for(local_subnet, "validator"), second["id"])
    assert sent["request"]["messages"] == [  # the miner got the whole conversation, not just the new turn
        {"role": "system", "content": "Answer briefly."}, first_question,
        {"role": "assistant", "content": first_reply}, second_question]

    third_reply = await stream_turn(local_subnet, api_key, chat, {
        "messages": [{"role": "user", "content": "Thanks."}], "uids": [good]})
    status, stored = await call(local_subnet, api_key, "GET", f"/v1/conversations/{created['id']}")
    assert status == 200
    assert [m["role"] for m in stored["messages"]] == ["system", "user", "assistant", "user", "assistant", "user",
                                                       "assistant"]
    assert stored["messages"][4]["content"] == second["choices"][0]["message"]["content"]
    assert stored["messages"][6]["content"] == third_reply and third_reply


async def test_conversations_are_private_to_their_key(local_subnet, api_key):
    _, created = await call(local_subnet, api_key, "POST", "/v1/conversations")
    other = local_subnet.create_api_key("someone-else")
    for method, path, body in (("GET", f"/v1/conversations/{created['id']}", None),
                               ("POST", f"/v1/conversations/{created['id']}/chat",
                                {"messages": [{"role": "user", "content": "hi"}]}),
                               ("DELETE", f"/v1/conversations/{created['id']}", None)):
        status, answer = await call(local_subnet, other, method, path, body)
        assert status == 404 and answer["error"]["code"] == "conversation_not_found"
    status, answer = await call(local_subnet, "sk-sn-wrong", "GET", f"/v1/conversations/{created['id']}")
    assert status == 401 and answer["error"]["type"] == "authentication_error"

    status, _ = await call(local_subnet, api_key, "DELETE", f"/v1/conversations/{created['id']}")
    assert status == 200
    status, _ = await call(local_subnet, api_key, "GET", f"/v1/conversations/{created['id']}")
    assert status == 404


async def test_a_failed_turn_stores_nothing_and_bad_bodies_are_422(local_subnet, api_key):
    _, created = await call(local_subnet, api_key, "POST", "/v1/conversations")
    chat = f"/v1/conversations/{created['id']}/chat"
    status, answer = await call(local_subnet, api_key, "POST", chat, {"messages": []})
    assert status == 422 and answer["error"]["type"] == "invalid_request_error"
    status, answer = await call(local_subnet, api_key, "POST", chat,
                                {"messages": [{"role": "user", "content": "hi"}], "uids": [999]})
    assert status == 400
    status, answer = await call(local_subnet, api_key, "POST", "/v1/conversations", {"metadata": {"k": 1}})
    assert status == 422
    _, stored = await call(local_subnet, api_key, "GET", f"/v1/conversations/{created['id']}")
    assert stored["messages"] == []


@pytest.fixture(scope="module")
def client(local_subnet, api_key) -> OpenAI:
    return OpenAI(base_url=local_subnet.api_url + "/v1", api_key=api_key, max_retries=0, timeout=30)


def test_legacy_completion_is_the_chat_answer_as_text(client, local_subnet):
    good = local_subnet.member("miner", "good").uid
    completion = client.completions.create(model="default", prompt="Explain consensus.", max_tokens=6, seed=9,
                                           extra_body={"uids": [good]})
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 6
    chat = client.chat.completions.create(model="default", max_tokens=6, seed=9, extra_body={"uids": [good]},
                                          messages=[{"role": "user", "content": "Explain consensus."}])
    assert completion.choices[0].text == chat.choices[0].message.content
    assert completion.miner_uid == good
    default = client.completions.create(model="default", prompt="Explain consensus.", extra_body={"uids": [good]})
    assert default.usage.completion_tokens <= 16  # OpenAI's default max_tokens for this endpoint


def test_legacy_completion_streams_and_echoes(client, local_subnet):
    good = local_subnet.member("miner", "good").uid
    chunks = list(client.completions.create(model="default", prompt="Explain consensus.", max_tokens=6, seed=9,
                                            stream=True, echo=True, stream_options={"include_usage": True},
                                            extra_body={"uids": [good]}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    whole = client.completions.create(model="default", prompt="Explain consensus.", max_tokens=6, seed=9,
                                      echo=True, extra_body={"uids": [good]})
    assert text == whole.choices[0].text and text.startswith("Explain consensus.")
    assert all(c.object == "text_completion" for c in chunks) and chunks[-1].usage.completion_tokens == 6


def test_legacy_completion_in_every_chat_mode(client, local_subnet):
    """A prompt becomes a chat message the modes can read: mixture of miners and test-time inference answer
    (they read the prompt's role, which a plain dict in its place did not have: a 500 before)."""
    good = local_subnet.member("miner", "good").uid
    for mode in ({"mixture": True}, {"test_time_inference": True}):
        completion = client.completions.create(model="default", prompt="Explain consensus.", max_tokens=6,
                                               extra_body={**mode, "uids": [good]})
        assert completion.object == "text_completion" and completion.choices[0].text, mode


def test_legacy_completion_several_prompts_and_refusals(client, local_subnet):
    good = local_subnet.member("miner", "good").uid
    both = client.completions.create(model="default", prompt=["First topic.", "Second topic."], max_tokens=4, n=2,
                                     extra_body={"uids": [good]})
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    assert both.choices[0].text != both.choices[2].text
    for kwargs in ({"suffix": "end"}, {"logprobs": 2}, {"best_of": 3}, {"stream": True, "prompt": ["a", "b"]}):
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(**{"model": "default", "prompt": "hi", **kwargs})
        assert refused.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model="default", prompt=[1, 2, 3])


async def test_conversation_and_completion_routes_need_a_key(local_subnet):
    for method, path in (("POST", "/v1/conversations"), ("POST", "/v1/completions")):
        status, answer = await call(local_subnet, "", method, path, {})
        assert status == 401 and answer["error"]["code"] == "missing_api_key"

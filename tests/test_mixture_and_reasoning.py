"""Mixture of miners, test-time inference and the model list, through the official ``openai`` SDK."""

from __future__ import annotations

import asyncio

import openai
import pytest
from test_scoring_forwarding import wait_for_item

MESSAGES = [{"role": "user", "content": "How do validators score miners?"}]


def uid_of(net, behaviour: str) -> int:
    return net.member("miner", behaviour).uid


async def test_mixture_aggregates_the_first_round_and_forwards_both_rounds(client, local_subnet, signer_for):
    good, noisy = uid_of(local_subnet, "good"), uid_of(local_subnet, "noisy")
    completion = await asyncio.to_thread(
        client.chat.completions.create, model="default", messages=MESSAGES, seed=4,
        extra_body={"mixture": True, "uids": [good, noisy]})
    assert completion.object == "chat.completion" and completion.choices[0].message.content
    assert completion.miner_uid in (good, noisy)

    signer = signer_for(local_subnet, "validator")
    first = await wait_for_item(local_subnet, signer, completion.id + "-round1")
    answers = {r["uid"]: "".join(r["chunks"]) for r in first["responses"]}
    assert set(answers) == {good, noisy} and all(r["status"] == "ok" for r in first["responses"])
    assert first["request"]["messages"] == MESSAGES

    aggregation = await wait_for_item(local_subnet, signer, completion.id)
    prompt = aggregation["request"]["messages"]
    assert prompt[0]["role"] == "system" and prompt[1:] == MESSAGES  # the client's conversation, unchanged
    assert all(text in prompt[0]["content"] for text in answers.values())  # every first-round answer in it
    winner = next(r for r in aggregation["responses"] if r["uid"] == completion.miner_uid)
    assert "".join(winner["chunks"]) == completion.choices[0].message.content


async def test_mixture_streams_with_usage(client, local_subnet, signer_for):
    good, noisy = uid_of(local_subnet, "good"), uid_of(local_subnet, "noisy")

    def stream():
        return list(client.chat.completions.create(
            model="default", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
            extra_body={"inference_mode": "Mixture-of-Agents", "uids": [good, noisy]}))

    chunks = await asyncio.to_thread(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len({c.id for c in chunks}) == 1 and text
    assert chunks[-1].usage.completion_tokens == len(text.split())
    aggregation = await wait_for_item(local_subnet, signer_for(local_subnet, "validator"), chunks[0].id)
    assert aggregation["request"]["messages"][0]["role"] == "system"


async def test_a_failing_first_round_miner_is_dropped(client, local_subnet, signer_for):
    good, broken = uid_of(local_subnet, "good"), uid_of(local_subnet, "broken")
    completion = await asyncio.to_thread(
        client.chat.completions.create, model="default", messages=MESSAGES,
        extra_body={"mixture": True, "uids": [good, broken]})
    assert completion.choices[0].message.content
    first = await wait_for_item(local_subnet, signer_for(local_subnet, "validator"), completion.id + "-round1")
    status = {r["uid"]: r["status"] for r in first["responses"]}
    assert status[good] == "ok" and status[broken] != "ok"


def test_mixture_with_no_answer_at_all_is_502(client, local_subnet):
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="default", messages=MESSAGES,
                                       extra_body={"mixture": True, "uids": [uid_of(local_subnet, "broken")]})
    assert failed.value.status_code == 502 and failed.value.body["code"] == "miners_failed"


def test_mixture_and_reasoning_together_is_422(client):
    with pytest.raises(openai.UnprocessableEntityError) as both:
        client.chat.completions.create(model="default", messages=MESSAGES,
                                       extra_body={"mixture": True, "inference_mode": "Chain-of-Thought"})
    assert "mixture" in both.value.body["message"]


async def test_test_time_inference_reasons_in_bounded_steps(client, local_subnet, signer_for):
    good = uid_of(local_subnet, "good")
    completion = await asyncio.to_thread(
        client.chat.completions.create, model="default", messages=MESSAGES,
        extra_body={"test_time_inference": True, "uids": [good]})
    content = completion.choices[0].message.content
    steps = completion.model_extra["steps"]
    assert [s["index"] for s in steps] == [1, 2, 3, 4]  # REASONING_MAX_STEPS: the builtin never says DONE
    assert content.startswith("Step 1: ") and "\n\nAnswer: " in content
    assert all(f"Step {s['index']}: {s['content']}" in content for s in steps)
    assert completion.miner_uid == good and completion.usage.completion_tokens >= len(content.split()) - 10

    signer = signer_for(local_subnet, "validator")
    second = await wait_for_item(local_subnet, signer, completion.id + "-step2")
    assert second["request"]["messages"][-2] == {"role": "assistant", "content": "Step 1: " + steps[0]["content"]}
    answer = await wait_for_item(local_subnet, signer, completion.id)
    assert "final reply" in answer["request"]["messages"][-1]["content"]


def test_test_time_inference_streams_step_by_step(client, local_subnet):
    chunks = list(client.chat.completions.create(
        model="default", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
        extra_body={"inference_mode": "Chain-of-Thought", "uids": [uid_of(local_subnet, "good")]}))
    steps = [c for c in chunks if c.choices]
    assert [(c.step, c.final) for c in steps] == [(1, False), (2, False), (3, False), (4, False), (5, True)]
    assert steps[0].choices[0].delta.content.startswith("Step 1: ")
    assert steps[-1].choices[0].delta.content.startswith("Answer: ")
    assert steps[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens > 0


def test_models_are_what_available_miners_serve(client, local_subnet):
    models = client.models.list()
    assert [m.id for m in models.data] == ["builtin-small"]
    assert models.data[0].miners == sum(1 for m in local_subnet.members if m.role == "miner")
    assert client.models.retrieve("builtin-small").id == "builtin-small"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-none")
    assert missing.value.body["code"] == "model_not_found"
    completion = client.chat.completions.create(model="builtin-small", messages=MESSAGES, max_tokens=3)
    assert completion.choices[0].message.content

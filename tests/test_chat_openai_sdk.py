"""The official ``openai`` SDK against a running local subnet: every field it and the subnet define."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

MESSAGES = [{"role": "user", "content": "Explain what a subnet validator does."}]


def uid_of(net, behaviour: str) -> int:
    return net.member("miner", behaviour).uid


def test_non_stream_answers_and_names_the_miner(client, local_subnet):
    completion = client.chat.completions.create(model="default", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.role == "assistant"
    assert len(completion.choices[0].message.content.split()) >= 3
    miners = {m.uid: m.hotkey for m in local_subnet.members if m.role == "miner"}
    assert miners[completion.miner_uid] == completion.miner_hotkey
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_model_may_be_omitted_through_extra_body_default(client):
    completion = client.chat.completions.create(model="", messages=MESSAGES)
    assert completion.choices[0].message.content


def test_stream_relays_chunks_and_usage(client, local_subnet):
    good = uid_of(local_subnet, "good")
    stream = client.chat.completions.create(model="default", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"uids": [good], "seed": 7})
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len({c.id for c in chunks}) == 1
    assert all(c.miner_uid == good for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(content.split())
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    same = client.chat.completions.create(model="default", messages=MESSAGES,
                                          extra_body={"uids": [good], "seed": 7})
    assert same.choices[0].message.content == content


def test_seed_and_sampling_parameters_reach_the_miner(client, local_subnet):
    good = uid_of(local_subnet, "good")

    def ask(**kwargs) -> str:
        extra = {"uids": [good], **kwargs.pop("extra_body", {})}
        return client.chat.completions.create(model="default", messages=MESSAGES, extra_body=extra,
                                              **kwargs).choices[0].message.content

    assert ask(seed=1) == ask(seed=1)
    assert ask(seed=1) != ask(seed=2)
    assert ask(seed=1, temperature=0.2) != ask(seed=1, temperature=0.9)
    assert ask(seed=1, extra_body={"sampling_parameters": {"temperature": 0.2}}) == ask(seed=1, temperature=0.2)
    # OpenAI's own field wins over sampling_parameters
    assert ask(seed=1, temperature=0.2, extra_body={"sampling_parameters": {"temperature": 0.9}}) == ask(
        seed=1, temperature=0.2)


def test_max_tokens_is_honoured(client, local_subnet):
    completion = client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=5,
                                                extra_body={"uids": [uid_of(local_subnet, "good")]})
    assert completion.usage.completion_tokens == 5
    assert completion.choices[0].finish_reason == "length"


def test_n_returns_several_choices(client, local_subnet):
    completion = client.chat.completions.create(model="default", messages=MESSAGES, n=2, seed=3,
                                                extra_body={"uids": [uid_of(local_subnet, "good")]})
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.choices[0].message.content != completion.choices[1].message.content


def test_uids_pick_the_miner(client, local_subnet):
    for behaviour in ("good", "noisy", "slow"):
        uid = uid_of(local_subnet, behaviour)
        completion = client.chat.completions.create(model="default", messages=MESSAGES, extra_body={"uids": [uid]})
        assert completion.miner_uid == uid


def test_task_field(client):
    completion = client.chat.completions.create(model="default", messages=MESSAGES,
                                                extra_body={"task": "InferenceTask"})
    assert completion.choices[0].message.content
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        client.chat.completions.create(model="default", messages=MESSAGES, extra_body={"task": "NoSuchTask"})
    assert "NoSuchTask" in bad.value.body["message"]
    with pytest.raises(openai.InternalServerError) as none:
        client.chat.completions.create(model="default", messages=MESSAGES,
                                       extra_body={"task": "ProgrammingTask"})
    assert none.value.status_code == 503 and none.value.body["code"] == "no_miners_available"


def test_unknown_model_goes_to_any_miner_and_says_what_served_it(client):
    # UNKNOWN_MODEL=any (the default, as the subnet's API): UNKNOWN_MODEL=reject's 404 is in test_web_retrieval_…
    completion = client.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=3)
    assert completion.model == "builtin-small" and completion.choices[0].message.content


def test_bad_input_is_422_in_openai_shape(client, local_subnet):
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="default", messages=[])
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="default", messages=MESSAGES, extra_body={"uids": [999]})
    assert "999" in unknown.value.body["message"]


@pytest.mark.parametrize("key", ["sk-sn-wrong", ""])
def test_bad_or_missing_key_is_401(local_subnet, key):
    client = OpenAI(base_url=local_subnet.api_url + "/v1", api_key=key or "unused", max_retries=0,
                    default_headers={"Authorization": ""} if not key else None)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="default", messages=MESSAGES)
    assert refused.value.status_code == 401
    assert refused.value.body["type"] == "authentication_error"

"""A miner that adds fields of its own for the client to act on (``injector`` in tests/dishonest_miner.py): a
``tool_calls`` delta the request never offered (``transfer_funds``), a ``finish_reason`` of its own and an extra
field, in every choice's last chunk and in its whole answers.

The client sees OpenAI's shapes rebuilt from what the gateway checked (``api.responses.client_choices`` and
``completion_object``): the text, the role, an OpenAI finish reason (``stop`` for one it does not know), and
nothing else the miner wrote.
"""

from __future__ import annotations

import pytest
from openai import OpenAI

MODULE = "tests.dishonest_miner"
INJECTOR = 1
MESSAGES = [{"role": "user", "content": "Say something about block times."}]


@pytest.fixture(scope="module")
def injected(tmp_path_factory, subnet_factory):
    net = subnet_factory(tmp_path_factory.mktemp("injector"), behaviours=["injector"], api_workers=1,
                         miner_modules=[MODULE], extra_env={"MINER_CHUNK_DELAY": "0"})
    yield net
    net.stop()


@pytest.fixture(scope="module")
def client(injected):
    return OpenAI(base_url=injected.api_url + "/v1", api_key=injected.create_api_key("injected"), max_retries=0,
                  timeout=30)


def nothing_injected(choice: dict) -> bool:
    return "injected" not in choice and "tool_calls" not in str(choice) and "transfer_funds" not in str(choice)


def test_a_stream_shows_only_what_was_checked(client):
    chunks = list(client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=8, stream=True, n=2,
                                                 extra_body={"uids": [INJECTOR]}))
    choices = [choice.to_dict() for chunk in chunks for choice in chunk.choices]
    assert choices and all(nothing_injected(choice) for choice in choices), choices
    assert sorted(c["finish_reason"] for c in choices if c.get("finish_reason")) == ["stop", "stop"]
    assert all(set(c["delta"]) <= {"role", "content"} for c in choices)
    assert all("".join(c["delta"].get("content") or "" for c in choices if c["index"] == i) for i in (0, 1))


def test_a_whole_answer_shows_only_what_was_checked(client):
    whole = client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=8, n=2,
                                           extra_body={"uids": [INJECTOR]})
    choices = [choice.to_dict() for choice in whole.choices]
    assert len(choices) == 2 and all(nothing_injected(choice) for choice in choices), choices
    assert [c["finish_reason"] for c in choices] == ["stop", "stop"]
    assert all(c["message"]["content"] and c["message"].get("tool_calls") is None for c in choices)

"""A stream that would go on and on ends at ``MINER_STREAM_TIMEOUT``, through the whole stack.

A miner that sends a token every half second (``MINER_CHUNK_DELAY``: each piece well within the read timeout)
for a 64-token answer would hold the client's stream, and the worker's connection and task for it, for half a
minute; with a 1.5 s limit on a whole stream the client has the first tokens, then an error event, and the
request is logged as the miner's failure and not charged. ``tests/test_miner_call_limits.py`` has the rule over
both HTTP clients, with empty events as the trickle too.
"""

from __future__ import annotations

import time

import gateway_client as gw
import openai
import pytest
from openai import OpenAI

MESSAGES = [{"role": "user", "content": "Tell me everything about validators, slowly."}]


@pytest.fixture(scope="module")
def trickling(tmp_path_factory, subnet_factory):
    net = subnet_factory(tmp_path_factory.mktemp("stream-limit"), behaviours=["good"], api_workers=1,
                         extra_env={"MINER_CHUNK_DELAY": "0.5", "MINER_STREAM_TIMEOUT": "1.5"})
    yield net
    net.stop()


async def test_a_trickling_stream_ends_at_the_limit_and_is_not_charged(trickling):
    answer = await gw.admin(trickling, "POST", "/create-api-key/?name=trickle")
    key, key_id = answer.body["api_key"], answer.body["id"]
    client = OpenAI(base_url=trickling.api_url + "/v1", api_key=key, max_retries=0, timeout=30)
    started, text, failure = time.monotonic(), "", None
    try:
        for chunk in client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=64, stream=True):
            text += "".join(choice.delta.content or "" for choice in chunk.choices)
    except openai.APIError as exc:  # the in-band error event
        failure = exc
    took = time.monotonic() - started
    assert failure is not None and "MINER_STREAM_TIMEOUT" in str(failure), failure
    assert text and 1.4 <= took < 6, (text, took)

    async def logged():
        logs = (await gw.admin(trickling, "GET", f"/logs?key={key_id}&since=2020-01-01")).body["logs"]
        return logs or None

    logs = await gw.eventually(logged, timeout=10)
    assert logs and logs[0]["outcome"] == "miner_error" and logs[0]["charged"] == 0, logs

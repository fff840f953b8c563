"""Models the hot path builds without a second validation (``shared.schemas.assembled``) equal validated ones.

``ChatCompletionRequest.to_miner_request`` and the forwarder's organic ``ScoringItem`` skip pydantic's
validation because every part was validated already; these tests hold them to what a validated model
would be, on the wire (what miners and the validator receive) and as objects.
"""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest

from api.forwarder import ScoringForwarder
from api.miner_call import MinerCall
from api.schemas import ChatCompletionRequest
from shared.schemas import (
    ChatMessage,
    MinerChatRequest,
    MinerRecord,
    MinerResponse,
    SamplingParameters,
    ScoringItem,
    assembled,
    key_id,
    updated,
)

BODIES = [
    {"messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}], "model": "m1",
     "temperature": 0.5, "top_p": 0.9, "max_tokens": 12, "seed": 7, "n": 2, "foo": {"a": [1, 2]},
     "json_format": True, "stream": True, "stream_options": {"include_usage": True}, "uids": [1, 2],
     "task": "InferenceTask"},
    {"messages": [{"role": "user", "content": "hi"}], "sampling_parameters": {"temperature": 0.1},
     "logit_bias": None, "user": "x", "max_completion_tokens": 5},
]


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("stream", [True, False])
def test_the_miner_request_equals_a_validated_one(body, stream):
    request = ChatCompletionRequest.model_validate_json(json.dumps(body))
    built = request.to_miner_request(stream=stream)
    validated = MinerChatRequest.model_validate_json(built.model_dump_json())
    assert built == validated
    for options in ({}, {"exclude_none": True}):
        assert orjson.loads(built.model_dump_json(**options)) == orjson.loads(validated.model_dump_json(**options))
    assert built.stream is stream
    assert built.model_copy(update={"stream": not stream}).stream is (not stream)
    if "seed" in body:
        assert built.seed == body["seed"]


def test_unpinned_seeds_differ_and_fit_32_bits():
    request = ChatCompletionRequest.model_validate(BODIES[0])
    seeds = {request.to_miner_request().seed for _ in range(50)}
    assert len(seeds) > 40 and all(0 <= s < 2**32 for s in seeds)


async def test_the_forwarded_item_equals_a_validated_one():
    forwarder = ScoringForwarder(client=None, validator_url="http://x", validator_hotkey="h", batch_size=10,
                                 interval=1.0, max_buffer=10)
    request = ChatCompletionRequest.model_validate(BODIES[1]).to_miner_request(stream=False)
    calls = []
    for uid in (3, 5):
        call = MinerCall(MinerRecord(uid=uid, hotkey=f"hk{uid}", address="127.0.0.1:1", incentive=0.1, stake=1.0))
        assert call.record.take_completion({"choices": [{"message": {"content": f"answer {uid}"},
                                                         "finish_reason": "stop"}],
                                            "usage": {"completion_tokens": 2}})
        calls.append(call)
    calls[1].status, calls[1].error = "error", "boom"
    done = []
    forwarder.submit_when_done(calls, "chatcmpl-1", request, key_id=key_id("k1"), then=lambda: done.append(1))
    assert done == [1] and len(forwarder.buffer) == 1
    item = forwarder.buffer[0].item
    assert forwarder.buffer[0].data == item.model_dump_json().encode()
    validated = ScoringItem.model_validate_json(item.model_dump_json())
    assert item == validated
    assert [r.uid for r in item.responses] == [3, 5] and item.responses[1].error == "boom"
    assert item.key_id == key_id("k1") and item.source == "organic" and item.request_id == "chatcmpl-1"
    await asyncio.sleep(0)


def test_assembled_is_model_construct_when_every_field_is_named():
    fields = {"messages": [ChatMessage(role="user", content="hi")], "model": None, "task": "InferenceTask",
              "seed": 3, "n": 1, "stream": False, "sampling_parameters": SamplingParameters(temperature=0.2)}
    extra = {"stream_options": {"include_usage": True}, "foo": [1]}
    built = assembled(MinerChatRequest, dict(fields), dict(extra))
    constructed = MinerChatRequest.model_construct(**fields, **extra)
    assert built == constructed and built.model_extra == constructed.model_extra == extra
    assert built.model_fields_set == constructed.model_fields_set
    assert built.model_dump_json(exclude_none=True) == constructed.model_dump_json(exclude_none=True)
    response = MinerResponse(uid=1, hotkey="h", status="ok")
    item = assembled(ScoringItem, {"request_id": "r", "source": "organic", "task": "InferenceTask",
                                   "created_at": 1.0, "request": built, "responses": [response],
                                   "search_query": None, "n_results": None, "requests_by_uid": None,
                                   "key_id": None}, {"ignored": 1})
    assert item.model_extra is None  # a model that ignores extra fields keeps none
    assert item == ScoringItem.model_construct(request_id="r", created_at=1.0, request=built, responses=[response])


def test_a_field_left_out_is_caught_by_the_comparison_with_a_validated_model():
    """What guards ``assembled``'s callers: leaving a field out does not pass for the validated model."""
    response = MinerResponse(uid=1, hotkey="h", status="ok")
    request = ChatCompletionRequest.model_validate(BODIES[0]).to_miner_request(stream=False)
    partial = assembled(ScoringItem, {"request_id": "r", "source": "organic", "task": "InferenceTask",
                                      "created_at": 1.0, "request": request, "responses": [response]})
    assert partial != ScoringItem.model_validate_json(
        ScoringItem.model_construct(request_id="r", created_at=1.0, request=request,
                                    responses=[response]).model_dump_json())


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("changes", [{"model": None}, {"uids": [3], "model": "m2"}, {"stream": True, "n": 3}])
def test_updated_is_model_copy(body, changes):
    request = ChatCompletionRequest.model_validate_json(json.dumps(body))
    request._routing = {"memo": 1}  # a private attribute travels with the copy, as with model_copy
    before = request.model_dump()
    copied, expected = updated(request, changes), request.model_copy(update=changes)
    assert copied == expected and copied.__dict__ == expected.__dict__
    assert copied.model_fields_set == expected.model_fields_set
    assert copied.model_extra == expected.model_extra and copied.__pydantic_private__ == expected.__pydantic_private__
    assert request.model_dump() == before  # the original is left as it was
    copied.model_extra["added"] = 1
    assert "added" not in (request.model_extra or {})  # the extra fields are the copy's own
    sampling = SamplingParameters(temperature=0.3)
    assert updated(sampling, {"top_p": 0.5}) == sampling.model_copy(update={"top_p": 0.5})
    assert updated(sampling, {"top_p": 0.5}).model_fields_set == {"temperature", "top_p"}

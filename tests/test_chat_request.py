"""A chat request on its way to miners and back: OpenAI's sampling fields folded over the subnet's
``sampling_parameters`` (never dropped), and the winner's chunks rendered for the client."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from api.miner_call import MinerCall
from api.responses import ChunkEvents, client_choices
from api.schemas import DEFAULT_SAMPLING, ChatCompletionRequest
from shared.chat_stream import StreamBroken, StreamRecord
from shared.schemas import MAX_CHOICES, MinerRecord, SamplingParameters

MESSAGES = [{"role": "user", "content": "hi"}]


def test_defaults_when_nothing_is_asked():
    assert ChatCompletionRequest(messages=MESSAGES).sampling() == SamplingParameters()


def test_openai_fields_override_sampling_parameters_and_extras_survive():
    request = ChatCompletionRequest(messages=MESSAGES, temperature=0.0, top_p=0.5, max_tokens=7,
                                    max_completion_tokens=9,
                                    sampling_parameters={"temperature": 1.2, "top_k": 5, "repetition_penalty": 1.1})
    sampling = request.sampling()
    assert (sampling.temperature, sampling.do_sample, sampling.top_p, sampling.top_k, sampling.max_new_tokens) == \
        (0.0, False, 0.5, 5, 9)  # max_completion_tokens wins over max_tokens
    assert sampling.model_extra == {"repetition_penalty": 1.1}
    assert request.sampling_parameters.temperature == 1.2  # the client's object is left as it was


def test_requests_share_no_sampling_object():
    """The defaults are one object that is only copied: one request's values never reach another's."""
    first = ChatCompletionRequest(messages=MESSAGES, max_tokens=5).sampling()
    second = ChatCompletionRequest(messages=MESSAGES, temperature=1.5).sampling()
    assert first is not second and first is not DEFAULT_SAMPLING and second is not DEFAULT_SAMPLING
    assert (first.max_new_tokens, first.temperature) == (5, SamplingParameters().temperature)
    assert (second.max_new_tokens, second.temperature) == (SamplingParameters().max_new_tokens, 1.5)
    assert DEFAULT_SAMPLING == SamplingParameters()


def test_the_miner_request_carries_them_and_the_stream_choice():
    request = ChatCompletionRequest(messages=MESSAGES, temperature=0.3, seed=11)
    whole = request.to_miner_request(stream=False)
    assert whole.stream is False and whole.seed == 11 and whole.sampling_parameters.temperature == 0.3
    assert request.to_miner_request().stream is True


def test_relayed_chunks_carry_our_fields_and_the_miners_choices():
    async def render() -> list[dict]:
        call = MinerCall(MinerRecord(uid=3, hotkey="5Hk", address="127.0.0.1:1", incentive=0.1, stake=1.0))
        events = ChunkEvents(call, request_id="chatcmpl-1", created=7, model="builtin-small")
        miner_chunks = [
            {"id": "miner-id", "model": "builtin-small", "usage": {"completion_tokens": 1},
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hé"}, "finish_reason": None}]},
            {"id": "miner-id", "model": "builtin-small",
             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        raw = [events.choices(client_choices(shown_parts(chunk))) for chunk in miner_chunks]
        assert all(r.startswith(b"data: ") and r.endswith(b"}\n\n") for r in raw)
        return [orjson.loads(r[6:]) for r in raw]

    first, last = asyncio.run(render())
    assert first == {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "builtin-small",
                     "miner_uid": 3, "miner_hotkey": "5Hk", "responder_hotkey": "5Hk",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hé"}, "logprobs": None,
                                  "finish_reason": None}]}
    assert last["choices"][0]["finish_reason"] == "stop" and last["id"] == "chatcmpl-1" and "usage" not in last


def shown_parts(chunk: dict) -> list:
    """What ``StreamRecord.take`` keeps of a chunk for the client (as the API's miner call does)."""
    shown: list = []
    StreamRecord(choices=MAX_CHOICES).take(chunk, shown)
    return shown


def test_a_relayed_choice_is_rebuilt_from_what_was_checked():
    """Whatever else a miner puts in a choice (tool calls nobody offered, fields of its own, a finish reason
    no client knows) stays out of the client's chunk."""
    sent = [{"index": 1, "delta": {"role": "assistant", "content": "x", "tool_calls": [{"id": "c"}]},
             "finish_reason": "hijacked", "injected": True, "logprobs": {"content": "fake"}},
            {"delta": {"role": "system", "content": None}, "finish_reason": "length"}]
    assert client_choices(shown_parts({"choices": sent})) == [
        {"index": 1, "delta": {"role": "assistant", "content": "x"}, "logprobs": None, "finish_reason": "stop"},
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]


@pytest.mark.parametrize("choice, expected", [
    ({"index": 0, "delta": {"content": "a"}}, {"index": 0, "delta": {"content": "a"}, "finish_reason": None}),
    ({"index": 2, "delta": {"content": ""}, "finish_reason": ""},
     {"index": 2, "delta": {"content": ""}, "finish_reason": None}),  # empty text is still text
    ({"delta": {"role": "assistant"}}, {"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}),
    ({"delta": {"role": "user", "content": "b"}}, {"index": 0, "delta": {"content": "b"}, "finish_reason": None}),
    ({"delta": None, "finish_reason": "tool_calls"}, {"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
    ({"delta": [], "finish_reason": "content_filter"}, {"index": 0, "delta": {}, "finish_reason": "content_filter"}),
    ({"delta": {"content": 0}}, {"index": 0, "delta": {}, "finish_reason": None}),  # no text: nothing shown
    ({"delta": {"content": "c", "function_call": {"name": "f"}}, "finish_reason": "function_call"},
     {"index": 0, "delta": {"content": "c"}, "finish_reason": "function_call"}),
])
def test_each_choice_is_shown_as_the_parts_that_were_checked(choice, expected):
    assert client_choices(shown_parts({"choices": [choice]})) == [{**expected, "logprobs": None}]


@pytest.mark.parametrize("choice", [{"index": "0", "delta": {"content": "a"}}, {"delta": "text"},
                                    {"delta": {"content": ["a"]}}, {"delta": {}, "finish_reason": 1}, "choice"])
def test_a_choice_that_fails_its_checks_shows_nothing(choice):
    shown: list = []
    with pytest.raises(StreamBroken):
        StreamRecord(choices=MAX_CHOICES).take({"choices": [choice]}, shown)
    assert shown == []

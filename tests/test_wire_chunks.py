"""``shared.wire_chunks``: typed decoding of a streamed answer's events takes exactly what the dict path takes.

A chunk that fits the types is taken by ``StreamRecord._take_wire``; any other is decoded as a dict and
taken by the rules written for dicts. Both must accept the same chunks, keep the same record, show a client
the same parts and break on the same chunks with the same message: generated chunks, well-formed and odd,
go both ways here and are compared step by step.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.chat_stream import StreamBroken, StreamRecord, WireChunk, event_budget
from shared.wire_chunks import decode_event, parse_event

ODD = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-1e6, 1e6), st.text(max_size=3),
                st.lists(st.integers(0, 2), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(-9, 9),
                                                                         max_size=2))
TEXT = st.text(max_size=6)


def maybe(key: str, value: st.SearchStrategy) -> st.SearchStrategy:
    """``{key: value}`` or ``{}``: a field present or not."""
    return st.one_of(st.just({}), value.map(lambda v: {key: v}))


def merged(*parts: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(*parts).map(lambda dicts: {k: v for d in dicts for k, v in d.items()})


def chunks(odd: bool) -> st.SearchStrategy:
    """Chunk objects: with ``odd``, any part may be of a type OpenAI's chunks never have; without, every part has
    the types of ``shared.wire_chunks`` (values may still break the rules: an index past ``n``, a long model)."""
    def part(well: st.SearchStrategy) -> st.SearchStrategy:
        return st.one_of(well, ODD) if odd else well
    delta = part(merged(maybe("role", st.one_of(st.just("assistant"), st.just("user"), ODD)),
                        maybe("content", part(st.one_of(TEXT, st.none()))), maybe("tool_calls", ODD)))
    choice = part(merged(maybe("index", part(st.integers(-2, 4))), maybe("delta", st.one_of(delta, st.none())),
                         maybe("finish_reason", part(st.one_of(st.sampled_from(["stop", "length", "eos", ""]),
                                                               st.none()))),
                         maybe("logprobs", ODD)))
    return merged(maybe("id", TEXT), maybe("object", st.just("chat.completion.chunk")),
                  maybe("model", part(st.one_of(TEXT, st.just("m" * 257), st.just("m"), st.none()))),
                  maybe("usage", part(st.one_of(st.fixed_dictionaries({"completion_tokens": st.integers(0, 5)}),
                                                st.none()))),
                  maybe("choices", part(st.one_of(st.lists(choice, max_size=3), st.none()))),
                  maybe("error", ODD) if odd else st.just({}))


def outcome(record: StreamRecord, chunk, shown: list) -> object:
    try:
        return record.take(chunk, shown)
    except StreamBroken as broken:
        return ("broken", str(broken))


def state(record: StreamRecord, shown: list) -> tuple:
    return (record.texts, len(record.timings), record.finish_reasons, record.usage, record.model,
            record.events_left, shown)


def take_both_ways(chunks: list[dict], choices: int, budget: int) -> None:
    """Each chunk through ``decode_event`` (typed, or a dict when it does not fit) and through ``orjson.loads``
    (always a dict): the same outcome and the same record after every step."""
    typed, plain = StreamRecord(choices=choices, max_events=budget), StreamRecord(choices=choices, max_events=budget)
    typed_shown: list = []
    plain_shown: list = []
    for chunk in chunks:
        data = orjson.dumps(chunk)
        if "error" in chunk:  # an error event: decoding tells the miner's message, as parse_event does
            with pytest.raises(StreamBroken) as typed_broken:
                decode_event(data)
            with pytest.raises(StreamBroken) as plain_broken:
                parse_event(data)
            assert str(typed_broken.value) == str(plain_broken.value)
            return
        step = outcome(typed, decode_event(data), typed_shown)
        assert step == outcome(plain, orjson.loads(data), plain_shown)
        assert state(typed, typed_shown) == state(plain, plain_shown)
        if isinstance(step, tuple):  # broken: the stream ends here
            return


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(chunks(odd=False), min_size=1, max_size=5), choices=st.integers(1, 3),
       budget=st.integers(1, 6))
def test_well_typed_chunks_take_the_typed_path_with_the_dict_paths_result(chunks, choices, budget):
    for chunk in chunks:
        assert type(decode_event(orjson.dumps(chunk))) is WireChunk
    take_both_ways(chunks, choices, budget)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(chunks(odd=True), min_size=1, max_size=5), choices=st.integers(1, 3),
       budget=st.integers(1, 6))
def test_odd_chunks_are_taken_or_refused_as_the_dict_path_does(chunks, choices, budget):
    take_both_ways(chunks, choices, budget)


def test_a_well_formed_chunk_is_decoded_typed_and_an_odd_one_as_a_dict():
    assert type(decode_event(b'{"id":"x","choices":[{"index":0,"delta":{"content":"a"}}]}')) is WireChunk
    assert decode_event(b'{"choices":[{"index":0,"delta":{"content":0}}]}') == \
        {"choices": [{"index": 0, "delta": {"content": 0}}]}  # odd but tolerated: no text


@pytest.mark.parametrize("data, message", [
    (b'{"choices":[{"index":3,"delta":{"content":"a"}}]}', "not one the request asked for"),
    (b'{"choices":[{"index":-1,"delta":{"content":"a"}}]}', "not one the request asked for"),
    (b'{"model":"' + b"m" * 257 + b'","choices":[]}', "longer than 256"),
    (b'{"choices":[{"index":"0","delta":{"content":"a"}}]}', "index is not an integer"),
    (b'{"choices":[{"index":0,"delta":{"content":["a"]}}]}', "content is not text"),
    (b'{"error":{"message":"out of memory"}}', "out of memory"),
    (b'{"error":null}', "None"),
    (b'[1]', "not a JSON object"),
    (b'{"choices":', "unparsable"),
    (b'{"model":"\xff"}', "unparsable"),  # invalid UTF-8 in a part that is read (msgspec: UnicodeDecodeError)
    (b'{"choices":[{"delta":{"content":"a\xffb"}}]}', "unparsable"),
    (b'{"x":' + b"[" * 2000 + b"]" * 2000 + b"}", "unparsable"),  # nesting past the limits (msgspec: RecursionError)
])
def test_what_the_typed_path_refuses_is_refused_with_the_rules_message(data, message):
    record = StreamRecord(choices=2)
    with pytest.raises(StreamBroken, match=message):
        record.take(decode_event(data))


def test_the_typed_path_keeps_the_event_budget_and_maps_unknown_finish_reasons():
    record = StreamRecord(choices=1, max_events=event_budget(0, 1))
    shown: list = []
    assert record.take(decode_event(b'{"model":"m","choices":[{"delta":{"role":"assistant","content":"hi"}}]}'),
                       shown)
    assert not record.take(decode_event(b'{"choices":[{"index":0,"delta":{},"finish_reason":"eos"}]}'), shown)
    assert shown == [(0, True, "hi", None), (0, False, None, "stop")]
    assert record.model == "m" and record.finish_reasons == {0: "stop"} and len(record.timings) == 1
    for _ in range(event_budget(0, 1) - 2):
        record.take(decode_event(b'{"choices":[]}'))
    with pytest.raises(StreamBroken, match="more events"):
        record.take(decode_event(b'{"choices":[]}'))


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(base=st.sampled_from([
    b'{"id":"x","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}',
    b'{"model":"m","usage":{"completion_tokens":1},"choices":[]}', b'{"error":{"message":"boom"}}']),
    changes=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=3))
def test_a_miners_garbled_bytes_raise_nothing_but_a_broken_stream(base, changes):
    """Bytes changed at random: decoding gives a chunk or ``StreamBroken``, never another exception that would
    escape the miner call; and what it refuses, the dict path refuses too, with the same message."""
    data = bytearray(base)
    for position, value in changes:
        data[position % len(data)] = value
    try:
        decode_event(bytes(data))
    except StreamBroken as broken:
        with pytest.raises(StreamBroken) as plain:
            parse_event(bytes(data))
        assert str(plain.value) == str(broken)


"""The reference miner's reader of its upstream's streamed events (``miner.backends.upstream._EventReader``):
events the decoder can type are read typed, the rest as dicts, and both ways read the same.

Generated events (OpenAI's usual ones, and odd ones: a whole ``message``, an error, parts of other types) go
through ``take`` and through ``_read`` alone (always a dict, what the reader did before typed decoding); the
content pieces, the outcome and the error must agree.
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miner.backends.base import Outcome
from miner.backends.upstream import _EventReader
from miner.errors import MinerError

ODD = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=3), st.lists(st.integers(0, 2),
                                                                                           max_size=2))


def maybe(key: str, value: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.just({}), value.map(lambda v: {key: v}))


def merged(*parts: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(*parts).map(lambda dicts: {k: v for d in dicts for k, v in d.items()})


PART = merged(maybe("role", ODD), maybe("content", st.one_of(st.text(max_size=5), st.none())))
CHOICE = merged(maybe("index", st.integers(0, 2)), maybe("delta", st.one_of(PART, st.none())),
                st.one_of(st.just({}), st.just({}), maybe("message", st.one_of(PART, ODD))),
                maybe("finish_reason", st.one_of(st.sampled_from(["stop", "length"]), st.none(), ODD)))
USAGE = st.fixed_dictionaries({"completion_tokens": st.integers(0, 9)}, optional={"prompt_tokens": st.integers(0, 9)})
EVENT = merged(maybe("id", st.text(max_size=3)), maybe("choices", st.one_of(st.lists(CHOICE, max_size=2), st.none())),
               maybe("usage", st.one_of(USAGE, st.none())),
               st.one_of(st.just({}), st.just({}), st.just({}),
                         maybe("error", st.one_of(ODD, st.just({"message": "x"})))))


def read(events: list[bytes], typed: bool) -> tuple:
    outcome = Outcome()
    reader = _EventReader(outcome)
    pieces: list[str] = []
    failure = None
    crashed = None  # garbage the reader never handled (a message that is not an object): the same crash both ways
    try:
        if typed:
            pieces, failure = reader.take(events)
        else:
            for data in events:
                try:
                    reader._read(orjson.loads(data), pieces)
                except MinerError as exc:
                    failure = exc
                    break
    except (AttributeError, TypeError) as exc:
        crashed = type(exc).__name__
        pieces = []  # what a crash leaves is nobody's: ``take`` never returns its pieces
    return (pieces, None if failure is None else failure.body(), crashed, outcome.finish_reason,
            outcome.prompt_tokens, outcome.completion_tokens, reader.reported_usage, reader.reported_prompt)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(EVENT, min_size=1, max_size=4))
def test_typed_and_dict_reading_of_upstream_events_agree(events):
    encoded = [orjson.dumps(event) for event in events]
    assert read(encoded, typed=True) == read(encoded, typed=False)


def test_a_usual_event_and_a_whole_message_both_give_their_text():
    usual = b'{"id":"x","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}'
    whole = b'{"choices":[{"index":0,"delta":{},"message":{"content":" there"},"finish_reason":"stop"}],' \
            b'"usage":{"prompt_tokens":3,"completion_tokens":2}}'
    pieces, sent, crashed, finish_reason, prompt_tokens, completion_tokens, _, _ = read([usual, whole], typed=True)
    assert (pieces, sent, crashed, finish_reason, prompt_tokens, completion_tokens) == \
        (["Hi", " there"], None, None, "stop", 3, 2)


def test_garbled_upstream_events_are_an_unreadable_event_not_a_crash():
    """Invalid UTF-8 in a part the miner reads, and nesting past the decoders' limits: a clean 502 from the
    miner, as orjson alone gave (msgspec raises UnicodeDecodeError and RecursionError for these)."""
    for data in (b'{"choices":[{"delta":{"content":"a\xffb"}}]}', b'{"x":' + b"[" * 2000 + b"]" * 2000 + b"}"):
        pieces, failure = _EventReader(Outcome()).take([data])
        assert pieces == [] and failure is not None and "unreadable event" in failure.body()["error"]["message"]


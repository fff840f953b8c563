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
from miner.backends.upstream import _EventReader, sse_batches
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


def events_by_lines(text: bytes) -> list[bytes]:
    """The SSE format read the plain way, line by line over the whole text: the oracle for ``sse_batches``."""
    events, data = [], []
    for line in text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n") + [b""]:
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif not line and data:
            events.append(b"\n".join(data))
            data = []
    return events


class Pieces:
    """A body that arrives in the given pieces, one per read."""

    def __init__(self, pieces: list[bytes]):
        self.pieces = pieces

    async def _iterate(self):
        for piece in self.pieces:
            yield piece

    def iter_any(self):
        return self._iterate()


LINE = st.sampled_from([b'data: {"choices":[]}', b"data:x", b"data:  two spaces", b"data:", b": a comment",
                        b"event: message", b"id: 7", b"", b"data: [DONE]"])
ENDING = st.sampled_from([b"\n", b"\r\n", b"\r"])


@settings(max_examples=500, deadline=None, derandomize=True)
@given(lines=st.lists(st.tuples(LINE, ENDING), max_size=12), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_events_are_the_same_however_the_text_is_cut_into_reads(lines, cuts):
    import asyncio

    text = b"".join(line + ending for line, ending in lines)
    bounds = sorted({cut % (len(text) + 1) for cut in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]

    async def read() -> list[bytes]:
        return [event async for batch in sse_batches(Pieces(pieces)) for event in batch]

    assert asyncio.run(read()) == events_by_lines(text)


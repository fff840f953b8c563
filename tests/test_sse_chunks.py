"""``shared.chat_stream.sse_chunks`` and ``SseBatches``: a miner's SSE stream as its chunks, up to ``[DONE]``.

Fed by a real server on 127.0.0.1 that writes exact bytes in separate writes (each a network read for
the client, split mid-line where it matters), read through the pooled client the API uses.
"""

from __future__ import annotations

import asyncio

import pytest

from shared.chat_stream import SseBatches, StreamBroken, StreamRecord, WireChunk, event_budget, sse_chunks
from shared.http_pool import HttpPool

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def piece(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def event(text: str) -> bytes:
    return b'data: {"choices": [{"index": 0, "delta": {"content": "' + text.encode() + b'"}}]}\n\n'


async def serve(writes: list[bytes]) -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)  # the body: "{}"
        for data in writes:
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0.02)  # a separate read for the client
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def chunks_of(writes: list[bytes], batches: bool = False) -> tuple[list, BaseException | None]:
    """What ``sse_chunks`` gives (or, with ``batches``, ``SseBatches``: a list per read), and how it ended."""
    server, port = await serve(writes)
    pool = HttpPool()
    got, failure = [], None
    try:
        async with pool.post("127.0.0.1", port, "/", {"Content-Type": "application/json"}, b"{}",
                             connect_timeout=2, read_timeout=2) as response:
            try:
                async for item in (SseBatches if batches else sse_chunks)(response.content):
                    got.append(item)
            except Exception as exc:  # StreamBroken, or the pool's BrokenAnswer for a cut connection
                failure = exc
    finally:
        await pool.close()
        server.close()
    return got, failure


def texts(chunks: list[WireChunk]) -> list[str]:
    return [chunk.choices[0].delta.content for chunk in chunks]


async def test_chunks_in_order_across_reads_and_done_ends_them():
    split = event("c")
    writes = [HEAD + piece(event("a") + event("b")), piece(split[:20]), piece(split[20:] + b"data: [DONE]\n\n"),
              piece(event("after done")), b"0\r\n\r\n"]
    got, failure = await chunks_of(writes)
    assert failure is None and texts(got) == ["a", "b", "c"]


async def test_chunks_before_a_broken_one_are_given_then_the_break():
    writes = [HEAD + piece(event("a") + event("b") + b"data: {not json\n\n" + event("lost")), b"0\r\n\r\n"]
    got, failure = await chunks_of(writes)
    assert texts(got) == ["a", "b"] and isinstance(failure, StreamBroken)


@pytest.mark.parametrize("ending", [b"0\r\n\r\n", b""], ids=["body ends", "connection cut"])
async def test_a_stream_without_done_is_broken(ending):
    got, failure = await chunks_of([HEAD + piece(event("a")), ending] if ending else [HEAD + piece(event("a"))])
    assert texts(got) == ["a"] and failure is not None


async def test_batches_are_what_each_read_completed():
    split = event("c")
    writes = [HEAD + piece(event("a") + event("b")), piece(b": a comment\n\n"), piece(split[:20]),
              piece(split[20:] + event("d") + b"data: [DONE]\n\n" + event("after done")), b"0\r\n\r\n"]
    got, failure = await chunks_of(writes, batches=True)
    assert failure is None and [texts(batch) for batch in got] == [["a", "b"], ["c", "d"]]


async def test_a_batch_before_a_broken_chunk_is_given_then_the_break():
    writes = [HEAD + piece(event("a")), piece(event("b") + b"data: {not json\n\n" + event("lost")), b"0\r\n\r\n"]
    got, failure = await chunks_of(writes, batches=True)
    assert [texts(batch) for batch in got] == [["a"], ["b"]] and isinstance(failure, StreamBroken)
    got, failure = await chunks_of([HEAD + piece(b'data: {"error": {"message": "GPU fell over"}}\n\n'),
                                    b"0\r\n\r\n"], batches=True)
    assert got == [] and "GPU fell over" in str(failure)


# --- StreamRecord: what a chunk may hold ---------------------------------------------------------------------

GOOD_CHUNKS = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {"model": "m", "choices": [{"index": 0, "delta": {"content": "Hel"}, "logprobs": None}]},
    {"choices": [{"delta": {"content": "lo"}}]},  # no index: choice 0
    {"choices": [{"index": 1, "delta": {"content": "other"}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
]


def test_a_well_formed_stream_is_recorded():
    record = StreamRecord()
    contents = [record.take(chunk) for chunk in GOOD_CHUNKS]
    assert contents == [False, True, True, True, False, False]
    assert record.text == "Hello" and record.texts[1] == ["other"] and len(record.timings) == 2
    assert record.finish_reasons == {0: "stop"} and record.model == "m" and record.usage["completion_tokens"] == 2


MALFORMED_CHUNKS = {
    "choices not a list": {"choices": {"index": 0}},
    "a choice not an object": {"choices": ["hello"]},
    "an index as text": {"choices": [{"index": "0", "delta": {"content": "a"}}]},
    "a negative index": {"choices": [{"index": -1, "delta": {"content": "a"}}]},
    "an index no request asks for": {"choices": [{"index": 8, "delta": {"content": "a"}}]},
    "a delta as text": {"choices": [{"index": 0, "delta": "hello"}]},
    "content not text": {"choices": [{"index": 0, "delta": {"content": ["hello"]}}]},
    "finish_reason not text": {"choices": [{"index": 0, "delta": {}, "finish_reason": {"why": 1}}]},
    "model not text": {"model": {"name": "m"}, "choices": []},
    "a model name longer than any model's": {"model": "m" * 257, "choices": []},
    "usage not an object": {"usage": [1, 2], "choices": []},
}


@pytest.mark.parametrize("case", list(MALFORMED_CHUNKS))
def test_a_malformed_chunk_breaks_the_stream_and_keeps_what_came_before(case):
    """A miner's garbage is its stream breaking (the call fails and is replaced), not an error elsewhere later."""
    record = StreamRecord()
    record.take(GOOD_CHUNKS[1])
    with pytest.raises(StreamBroken, match="malformed"):
        record.take(MALFORMED_CHUNKS[case])
    assert record.text == "Hel"


MALFORMED_ANSWERS = {
    "a choice not an object": {"choices": ["hello"]},
    "an index as text": {"choices": [{"index": "0", "message": {"content": "a"}}]},
    "an index no request asks for": {"choices": [{"index": 10**6, "message": {"content": "a"}}]},
    "a message as text": {"choices": [{"index": 0, "message": "hello"}]},
    "finish_reason not text": {"choices": [{"index": 0, "message": {"content": "a"}, "finish_reason": 1}]},
    "model not text": {"model": ["m"], "choices": []},
    "a model name longer than any model's": {"model": "m" * 257, "choices": []},
}


@pytest.mark.parametrize("case", list(MALFORMED_ANSWERS))
def test_a_malformed_whole_answer_is_broken(case):
    with pytest.raises(StreamBroken, match="malformed"):
        StreamRecord().take_completion(MALFORMED_ANSWERS[case])
    record = StreamRecord()
    assert record.take_completion({"model": "m", "choices": [{"index": 0, "message": {"role": "assistant",
                                   "content": "hi"}, "finish_reason": "stop"}], "usage": {"completion_tokens": 1}})
    assert record.text == "hi" and record.finish_reasons == {0: "stop"} and record.model == "m"


def test_a_choice_past_the_requests_n_is_malformed():
    """A record knows how many choices its request asked for: one more, in a chunk or a whole answer, would
    reach the client as an answer it never asked for, counted against its token quota."""
    asked_two = StreamRecord(choices=2)
    assert asked_two.take({"choices": [{"index": 1, "delta": {"content": "second"}}]})
    with pytest.raises(StreamBroken, match="asked for"):
        asked_two.take({"choices": [{"index": 2, "delta": {"content": "third"}}]})
    with pytest.raises(StreamBroken, match="asked for"):
        StreamRecord(choices=1).take_completion({"choices": [{"index": 0, "message": {"content": "a"}},
                                                             {"index": 1, "message": {"content": "b"}}]})


def test_a_record_takes_no_more_events_than_its_budget():
    """``event_budget``: four events per token asked for, per choice, and 64 more; one more is malformed."""
    assert event_budget(10, 1) == 168 and event_budget(10, 2) == 272
    record = StreamRecord(choices=1, max_events=3)
    for chunk in ({"choices": [{"index": 0, "delta": {"content": "a"}}]}, {"choices": []}, {}):
        record.take(chunk)
    with pytest.raises(StreamBroken, match="more events than the tokens asked for"):
        record.take({"choices": [{"index": 0, "delta": {"content": "b"}}]})
    assert record.text == "a"

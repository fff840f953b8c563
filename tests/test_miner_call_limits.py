"""A miner call's limits (first-chunk deadline, answer cap), against scripted miners on 127.0.0.1, over both clients.

The deadline is the call's total time limit until its first content arrives, then moved to the limit on a
whole stream (round 11 of docs/performance.md, ``MINER_STREAM_TIMEOUT``): a miner that sends headers and then
nothing, or only empty events, is cut at the deadline though each piece comes well within the read timeout; a
miner that starts in time may then stream for longer than the deadline, but not past the stream's limit.
Each case runs over the pooled client (a plain ``ip:port`` address, as on a real subnet) and over aiohttp
(an address with a path, which the pool does not take: the https route).
"""

from __future__ import annotations

import asyncio

import bittensor as bt
import orjson
import pytest
from test_http_pool import Scripted

from api.miner_call import CallLimits, MinerCall
from shared.auth import Signer
from shared.chat_stream import event_budget
from shared.schemas import ChatMessage, MinerChatRequest, MinerRecord, SamplingParameters
from shared.signed_http import SignedClient
from validator import synthetic

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
MINER = bt.sp_core.Keypair.create_from_uri("//Bob")


def event(payload: bytes) -> bytes:
    """One chunk of the chunked body: a server-sent event."""
    data = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def content(text: str) -> bytes:
    return event(orjson.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}))


EMPTY = event(orjson.dumps({"choices": [{"index": 0, "delta": {}}]}))  # an event with no content
END = event(b"[DONE]") + b"0\r\n\r\n"


def scripted_miner(pieces: list[tuple[float, bytes]], head: bytes = HEAD, *, requests: int = 8) -> Scripted:
    """A server (``test_http_pool.Scripted``) that answers each of up to ``requests`` POSTs with ``head`` (an
    event stream's, unless told) and then ``pieces``: (delay in seconds, bytes), in order."""
    return Scripted([[(0, head), *pieces]] * requests)


def address(port: int, route: str) -> str:
    """``pool``: what a metagraph gives (the pooled client); ``aiohttp``: a URL with a path (aiohttp's route)."""
    return f"127.0.0.1:{port}" if route == "pool" else f"http://127.0.0.1:{port}/prefix"


async def call(miner_address: str, *, first_chunk_timeout: float, read_timeout: float = 5.0,
               max_answer_bytes: int | None = None, stream: bool = True,
               stream_timeout: float | None = None, max_tokens: int | None = None) -> tuple[MinerCall, float]:
    client = SignedClient(Signer(bt.sp_core.Keypair.create_from_uri("//Alice")))
    record = MinerRecord(uid=1, hotkey=MINER.ss58_address, address=miner_address, incentive=0.1, stake=1.0)
    miner_call = MinerCall(record, max_tokens=max_tokens)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await miner_call.run(client, b'{"stream": true}', CallLimits(2.0, read_timeout, first_chunk_timeout,
                                                                     max_answer_bytes, stream_timeout), stream=stream)
    finally:
        await client.close()
    return miner_call, loop.time() - started


@pytest.mark.parametrize("route", ["pool", "aiohttp"])
async def test_headers_then_silence_end_at_the_first_chunk_deadline(route):
    async with scripted_miner([(3.0, content("late")), (0, END)]) as miner:
        outcome, took = await call(address(miner.port, route), first_chunk_timeout=0.4)
    assert outcome.status == "timeout" and 0.35 <= took < 1.5
    assert outcome.first.done() and outcome.first.result() is False


@pytest.mark.parametrize("route", ["pool", "aiohttp"])
async def test_empty_events_in_time_do_not_hold_the_deadline_off(route):
    """Something every 0.1 s (well within the read timeout), but no content: cut at the deadline, not later."""
    async with scripted_miner([(0.1, EMPTY)] * 30 + [(0, content("late")), (0, END)]) as miner:
        outcome, took = await call(address(miner.port, route), first_chunk_timeout=0.5)
    assert outcome.status == "timeout" and 0.45 <= took < 1.5
    assert outcome.record.texts == {}


@pytest.mark.parametrize("route", ["pool", "aiohttp"])
async def test_a_stream_that_started_in_time_may_run_past_the_deadline(route):
    """First content at once, then a piece every 0.1 s for 1.2 s: three times the deadline, and whole."""
    pieces = [(0, content("a"))] + [(0.1, content("b"))] * 12 + [(0, END)]
    async with scripted_miner(pieces) as miner:
        outcome, took = await call(address(miner.port, route), first_chunk_timeout=0.4)
    assert outcome.status == "ok", outcome.error
    assert "".join(outcome.record.texts[0]) == "a" + "b" * 12 and took >= 1.2


@pytest.mark.parametrize("route", ["pool", "aiohttp"])
@pytest.mark.parametrize("trickle", ["empty events", "content"])
async def test_a_trickling_stream_ends_at_the_limit_on_a_whole_stream(route, trickle):
    """First content at once, then something every 0.1 s (well within the read timeout) for 6 s: cut at the
    1.5 s the whole stream may take, with what came before kept; the same stream within a longer limit is
    whole (the previous test: no limit)."""
    piece = EMPTY if trickle == "empty events" else content("b")
    pieces = [(0, content("a"))] + [(0.1, piece)] * 60 + [(0, END)]
    async with scripted_miner(pieces) as miner:
        outcome, took = await call(address(miner.port, route), first_chunk_timeout=0.4, stream_timeout=1.5)
    assert outcome.status == "timeout" and "MINER_STREAM_TIMEOUT" in outcome.error and 1.4 <= took < 3.0
    assert outcome.first.result() is True and "".join(outcome.record.texts[0]).startswith("a")
    async with scripted_miner([(0, content("a"))] + [(0.1, piece)] * 8 + [(0, END)]) as miner:
        outcome, took = await call(address(miner.port, route), first_chunk_timeout=0.4, stream_timeout=5.0)
    assert outcome.status == "ok" and took >= 0.8


async def test_a_drained_stream_leaves_its_connection_for_the_next_call():
    """The end of the chunked body is read after [DONE] (``finish``), so the next call reuses the connection."""
    client = SignedClient(Signer(bt.sp_core.Keypair.create_from_uri("//Alice")))
    async with scripted_miner([(0, content("a")), (0, END)]) as miner:
        record = MinerRecord(uid=1, hotkey=MINER.ss58_address, address=f"127.0.0.1:{miner.port}",
                             incentive=0.1, stake=1.0)
        for _ in range(3):
            outcome = MinerCall(record)
            await outcome.run(client, b'{"stream": true}', CallLimits(2.0, 5.0, 1.0))
            assert outcome.status == "ok"
        assert miner.connections == 1
    await client.close()


async def test_a_body_end_held_back_after_done_costs_a_second_not_the_answer():
    """[DONE] at once, the chunked body's end only 3 s later: the answer stands after ``finish``'s 1 s, and
    the connection, not read to its end, is closed rather than reused."""
    client = SignedClient(Signer(bt.sp_core.Keypair.create_from_uri("//Alice")))
    pieces = [(0, content("a")), (0, event(b"[DONE]")), (3.0, b"0\r\n\r\n")]
    async with scripted_miner(pieces) as miner:
        record = MinerRecord(uid=1, hotkey=MINER.ss58_address, address=f"127.0.0.1:{miner.port}",
                             incentive=0.1, stake=1.0)
        loop = asyncio.get_running_loop()
        for expected_connections in (1, 2):
            started = loop.time()
            outcome = MinerCall(record)
            await outcome.run(client, b'{"stream": true}', CallLimits(2.0, 5.0, 10.0))
            assert outcome.status == "ok" and 0.9 <= loop.time() - started < 2.0
            assert miner.connections == expected_connections
    await client.close()


@pytest.mark.parametrize("route", ["pool", "aiohttp"])
async def test_a_stream_without_end_is_cut_at_the_answer_cap(route):
    """A miner streaming content without end (each piece in time) fails once it has sent the cap: the chunks
    before it were taken, and the worker's memory holds no more than the cap."""
    async with scripted_miner([(0, content("x" * 1000))] * 400 + [(0, END)]) as miner:
        outcome, _ = await call(address(miner.port, route), first_chunk_timeout=5.0, max_answer_bytes=100_000)
    assert outcome.status == "error" and "larger than the cap on a miner's answer (100000 bytes)" in outcome.error
    assert 0 < len(outcome.record.texts[0]) < 100


WHOLE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


def scripted_whole_miner(size: int) -> Scripted:
    """A whole answer as a chunked JSON body of ``size`` bytes of padding."""
    answer = orjson.dumps({"choices": [{"index": 0, "message": {"content": "a" * size}}]})
    pieces = [answer[i:i + 65536] for i in range(0, len(answer), 65536)]
    return scripted_miner([(0, b"%x\r\n%s\r\n" % (len(p), p)) for p in pieces] + [(0, b"0\r\n\r\n")],
                         head=WHOLE_HEAD)


@pytest.mark.parametrize("route", ["pool", "aiohttp"])
async def test_a_whole_answer_past_the_cap_fails_and_one_below_it_stands(route):
    async with scripted_whole_miner(300_000) as miner:
        outcome, _ = await call(address(miner.port, route), first_chunk_timeout=5.0, max_answer_bytes=200_000,
                                stream=False)
        assert outcome.status == "error" and "MINER_MAX_ANSWER_BYTES" in outcome.error
        outcome, _ = await call(address(miner.port, route), first_chunk_timeout=5.0, max_answer_bytes=400_000,
                                stream=False)
        assert outcome.status == "ok" and len(outcome.record.text) == 300_000


async def synthetic_answer(pieces: list[tuple[float, bytes]], max_new_tokens: int = 1024):
    """What the validator's own streamed round (``validator.synthetic.query``) makes of a scripted miner."""
    client = SignedClient(Signer(bt.sp_core.Keypair.create_from_uri("//Alice")))
    request = MinerChatRequest(messages=[ChatMessage(role="user", content="hi")],
                               sampling_parameters=SamplingParameters(max_new_tokens=max_new_tokens))
    try:
        async with scripted_miner(pieces) as miner:
            return await synthetic.query(client, 1, MINER.ss58_address, f"127.0.0.1:{miner.port}", request,
                                         timeout=5.0)
    finally:
        await client.close()


async def test_the_validator_cuts_an_endless_synthetic_answer_too(monkeypatch):
    """The validator's own streamed rounds stop at its cap as well."""
    monkeypatch.setattr(synthetic, "MAX_ANSWER_BYTES", 100_000)
    answer = await synthetic_answer([(0, content("x" * 1000))] * 400 + [(0, END)])
    assert answer.status == "error" and "100000 bytes" in answer.error


@pytest.mark.parametrize("route", ["pool", "aiohttp"])
async def test_a_flood_of_events_is_cut_at_what_the_tokens_asked_for_allow(route):
    """Content at once, then 2,000 empty events, each tiny and in time (60 KB in all, far below the answer
    cap): every one would cost the worker a parse. Asked for 10 tokens, the stream may bring
    ``event_budget(10, 1)`` = 168 events; the call fails there. Asked for 1,000, the same stream is whole."""
    pieces = [(0, content("a")), (0, EMPTY * 1000), (0, EMPTY * 1000), (0, END)]
    async with scripted_miner(pieces) as miner:
        outcome, _ = await call(address(miner.port, route), first_chunk_timeout=5.0, max_tokens=10)
        assert outcome.status == "error" and "more events than the tokens asked for" in outcome.error
        assert outcome.record.texts[0] == ["a"] and event_budget(10, 1) == 168
        outcome, _ = await call(address(miner.port, route), first_chunk_timeout=5.0, max_tokens=1000)
        assert outcome.status == "ok", outcome.error


async def test_the_validator_cuts_a_flood_of_events_too():
    answer = await synthetic_answer([(0, content("a")), (0, EMPTY * 1000), (0, END)], max_new_tokens=8)
    assert answer.status == "error" and "more events than the tokens asked for" in answer.error


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_an_error_answer_is_read_only_as_far_as_its_message(stream):
    """A miner's 500 with megabytes of body: the call fails naming the status, having read at most 64 KiB."""
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"x" * 65536
    pieces = [(0, b"%x\r\n%s\r\n" % (len(body), body))] * 40 + [(0, b"0\r\n\r\n")]
    async with scripted_miner(pieces, head=head) as miner:
        outcome, _ = await call(address(miner.port, "pool"), first_chunk_timeout=5.0, stream=stream)
    assert outcome.status == "error" and outcome.error.startswith("HTTP 500: (an error body larger than 65536")

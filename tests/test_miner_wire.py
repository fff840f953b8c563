"""The miner's hot-path parts on their own: pinned builtin output, rendered SSE events, coalesced writes."""

from __future__ import annotations

import asyncio
import socket

import pytest

from miner import openai_wire as wire
from miner.backends.builtin import generate_completion, generate_tokens
from miner.sse import sse
from shared.coalesced_writes import CoalescingTransport

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SAMPLING = {"temperature": 0.7, "top_p": 0.95, "top_k": 50, "max_new_tokens": 1024}


def test_builtin_output_is_pinned():
    """Validators re-derive a good miner's answer: a miner and a validator of different versions must agree."""
    assert "".join(generate_tokens(QUESTION, "builtin-small", 1, SAMPLING)) == (
        "Regarding what is the capital of, data are in. And reason step when approach model by often. System a for"
        " value it to for. Value usually in on part are will with when from usually. Will are way usually which"
        " that way is but. Case detail are often by it question data is."
    )
    assert generate_completion(QUESTION, "builtin-small", 7, {**SAMPLING, "max_new_tokens": 12}) == (
        ["Concerning ", "what ", "is ", "the, ", "method ", "that ", "will. ", "Often ", "method ", "of ", "to ",
         "for"],
        "length",
    )
    tokens, finish_reason = generate_completion(QUESTION, "builtin-small", 3, {**SAMPLING, "temperature": 0.0,
                                                                                "top_k": 5})
    assert finish_reason == "stop" and len(tokens) == 35
    assert "".join(tokens).endswith("the that. A the the a the that.")


@pytest.mark.parametrize("piece", ["word ", "", 'a "quoted" \\ piece\n\twith\u2028 日本語 and \x01', "\u00e9"])
def test_rendered_chunk_events_are_the_serialised_chunks(piece):
    events = wire.ChunkEvents("chatcmpl-abc", 1700000000, 'model "x"')
    first = sse(wire.chunk("chatcmpl-abc", 1700000000, 'model "x"', 3, {"role": "assistant", "content": piece}))
    later = sse(wire.chunk("chatcmpl-abc", 1700000000, 'model "x"', 3, {"content": piece}))
    assert events.content(3, [piece], role_first=True) == first
    assert events.content(3, [piece, piece], role_first=True) == first + later
    assert events.content(3, [piece], role_first=False) == later


async def test_writes_of_one_loop_turn_leave_together_when_it_ends():
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    corked = CoalescingTransport(transport, loop)
    try:
        corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
        corked.write(b"data: 1\n\n")
        with pytest.raises(BlockingIOError):
            theirs.recv(1024)  # nothing is on the wire while the turn lasts
        await asyncio.sleep(0)  # the turn ends
        received = await asyncio.wait_for(loop.sock_recv(theirs, 1024), 5)
        assert received == b"HTTP/1.1 200 OK\r\n\r\ndata: 1\n\n"

        corked.write(b"last words")
        corked.close()  # closing sends what is pending first
        received = b""
        while chunk := await asyncio.wait_for(loop.sock_recv(theirs, 1024), 5):
            received += chunk
        assert received == b"last words"
    finally:
        transport.close()
        theirs.close()

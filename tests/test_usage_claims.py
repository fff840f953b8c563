"""A miner's ``usage`` is its word: what is billed, shown and logged takes its counts only where they can be true.

A dishonest miner could otherwise hand tokens back to a client (a negative count), use up a client's token
quota with one answer (a count of billions), or break the request log's insert and the books (a count past a
64-bit column, text where a number goes). The rule (``shared.chat_stream.believable_count``): a whole number
from 0 to one token per character sent (completion) or per byte of the request (prompt); else our count.
"""

from __future__ import annotations

import pytest

from api.meter import miner_log
from api.miner_call import MinerCall
from api.responses import usage_of
from shared.chat_stream import StreamRecord, believable_count
from shared.schemas import MinerRecord

ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "four words of text"}}]}
REQUEST_BYTES = 300
LIES = {"negative": -1_000_000, "huge": 10**20, "text": "lots", "a bool": True, "a fraction": 5.5,
        "past what was sent": 500, "null": None}


def answered(usage: dict) -> MinerCall:
    call = MinerCall(MinerRecord(uid=1, hotkey="hk", address="127.0.0.1:1", incentive=0.1, stake=1.0))
    call.request_bytes = REQUEST_BYTES
    assert call.record.take_completion({**ANSWER, "usage": usage})
    return call


def test_believable_counts():
    assert believable_count(7, 10) == 7 and believable_count(0, 10) == 0 and believable_count(10, 10) == 10
    for lie in (-1, 11, True, 7.0, "7", None, [7]):
        assert believable_count(lie, 10) is None


async def test_honest_counts_are_taken_as_the_miner_gives_them():
    usage = usage_of(answered({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17, "extra": "x"}), 3)
    assert usage == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}  # standard fields only


@pytest.mark.parametrize("lie", list(LIES))
async def test_a_completion_count_that_cannot_be_true_is_replaced_by_ours(lie):
    call = answered({"prompt_tokens": 12, "completion_tokens": LIES[lie]})
    assert usage_of(call, 3) == {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}  # 4 words
    assert miner_log(call, True).completion_tokens == 4
    assert call.response_record().completion_tokens is None  # what the validator is sent: no claim at all


@pytest.mark.parametrize("lie", [name for name in LIES if name != "past what was sent"])
async def test_a_prompt_count_that_cannot_be_true_is_replaced_by_ours(lie):
    usage = usage_of(answered({"prompt_tokens": LIES[lie], "completion_tokens": 5}), 3)
    assert usage == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    inflated = usage_of(answered({"prompt_tokens": REQUEST_BYTES + 1, "completion_tokens": 5}), 3)
    assert inflated["prompt_tokens"] == 3  # more tokens than the request had bytes


def test_a_streamed_record_bounds_its_claim_by_what_it_received():
    record = StreamRecord()
    record.take({"choices": [{"index": 0, "delta": {"content": "abc"}}]})
    record.take({"choices": [], "usage": {"completion_tokens": 3 + 16}})
    assert record.claimed_completion_tokens() == 19  # three characters, and the special tokens' allowance
    record.take({"choices": [], "usage": {"completion_tokens": 3 + 17}})
    assert record.claimed_completion_tokens() is None

"""Mixture of miners: several miners answer, one more miner writes the answer from theirs.

After Wang et al. 2024 (arXiv 2406.04692), "Mixture-of-Agents". Asked for with
``extra_body={"mixture": true}`` or ``inference_mode: "Mixture-of-Agents"``::

    request, aggregators, width = await first_round(gateway, miner_request, candidates, width, request_id=rid)
    # then the plain chat path races ``aggregators`` with ``request`` and streams or returns the winner

The first round asks ``MIXTURE_SIZE`` miners (or the client's ``uids`` or
``top_n``; at most 8, the rest can still aggregate) at once, for whole answers, within ``MIXTURE_TIMEOUT``: it takes
as long as its slowest miner, never the sum. Miners that fail or run late are
dropped; if none answers, the request fails (502) before any byte is sent.
The answers, unattributed, go to the aggregator in a system message (merged
into the client's own, if it has one) that asks it to combine them, followed
by the client's conversation unchanged; so the aggregator still answers the
client's last message, and chat templates that want the system message first
accept it. Aggregators are tried fastest first-round
miner first (it has just shown it is up and quick), then the other
candidates; ``MIXTURE_AGGREGATOR_FANOUT`` of them race. The first round is
forwarded for scoring as its own item (``<request id>-round1``); the
aggregation round under the request's id, like any chat request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from shared.schemas import ChatMessage, MinerChatRequest, MinerRecord

from .errors import ApiError
from .fanout import FanOut
from .meter import Meter
from .race import describe_failures
from .rounds import all_answers, ended, finished_at, forward_when_over, start_call

if TYPE_CHECKING:
    from .gateway import Gateway

MAX_ANSWER_CHARS = 8000  # of each first-round answer, in the aggregation prompt
MAX_FIRST_ROUND = 8  # miners in the first round, whatever uids or top_n ask for: the prompt stays bounded

AGGREGATE_INSTRUCTION = (
    "Several assistants have each written, independently, a candidate reply to the user's last message in "
    "this conversation; they are listed below. Write the one reply the user should get: keep what the "
    "candidates get right and agree on, correct or leave out what is wrong, and do not repeat yourself. "
    "Reply to the user directly, without mentioning the candidates."
)


def aggregation_messages(messages: list[ChatMessage], answers: list[str]) -> list[ChatMessage]:
    candidates = "\n\n".join(f"Candidate {i}:\n{text[:MAX_ANSWER_CHARS]}" for i, text in enumerate(answers, 1))
    guide = f"{AGGREGATE_INSTRUCTION}\n\n{candidates}"
    if messages and messages[0].role == "system" and isinstance(messages[0].content, str):
        return [ChatMessage(role="system", content=f"{messages[0].content}\n\n{guide}"), *messages[1:]]
    return [ChatMessage(role="system", content=guide), *messages]


async def first_round(gateway: Gateway, miner_request: MinerChatRequest, candidates: list[MinerRecord], width: int, *,
                      request_id: str, meter: Optional[Meter] = None,
                      ) -> tuple[MinerChatRequest, list[MinerRecord], int]:
    """Run the first round; return the aggregation request, the aggregators in order, and how many race."""
    settings = gateway.settings
    chosen = candidates[: min(width or settings.mixture_size, MAX_FIRST_ROUND)]
    round_request = miner_request.model_copy(update={"n": 1})
    payload = round_request.model_dump_json(exclude_none=True).encode()
    calls: list = []  # every chosen miner at once, none replaced: a late or failed one is dropped
    max_tokens = round_request.sampling_parameters.max_new_tokens
    FanOut(chosen, start=lambda miner: start_call(gateway, miner, payload, max_tokens), signal=ended, width=len(chosen),
           max_attempts=len(chosen), started=calls).start()
    try:
        await all_answers(calls, settings.mixture_timeout)
    finally:  # even when the client went away: what the miners answered is still scored
        forward_when_over(gateway, f"{request_id}-round1", round_request, calls, meter)

    answered = sorted((c for c in calls if c.status == "ok"), key=finished_at)
    if not answered:
        raise ApiError(502, f"mixture: no first-round miner answered: {describe_failures(calls)}", "miners_failed")
    tried = {c.miner.uid for c in calls}
    aggregators = [c.miner for c in answered] + [m for m in candidates if m.uid not in tried]
    aggregate = miner_request.model_copy(
        update={"messages": aggregation_messages(miner_request.messages, [c.record.text for c in answered])})
    return aggregate, aggregators, min(settings.mixture_aggregator_fanout, len(aggregators))

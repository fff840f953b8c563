"""Forward what miners answered to the validator, in batches, off the request path.

    forwarder.submit_when_done(calls, request_id, request, key_id=…, then=…)   # a round of miner calls
    forwarder.submit(organic_item(request_id, request, responses, …))         # answers already in hand

Requests only append to a bounded buffer (``api.batching``). A background
loop sends batches to the validator's signed ``POST /scoring`` and keeps them
while the validator is down. Each item carries a unique ``request_id``, so a
batch resent after a lost reply is stored once.

``organic_item`` is the one place an organic ``ScoringItem`` is built (chat rounds; web retrieval, with its
query). ``submit_when_done`` builds it from miner calls once every call has ended (at once, when they all
have; else in a task the forwarder keeps and ``drain`` waits for), then runs ``then()`` (the meter's
``miners_finished``: the request can be logged). A round goes only while its miners are within the
worker's forward budget (``wants``, ``api.forward_budget``): many times what the validator counts, not
every round of a busy worker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, NamedTuple, Optional

from loguru import logger

from shared.schemas import MinerChatRequest, MinerResponse, ScoringItem, assembled
from shared.signed_http import SignedCallError, SignedClient

from .batching import BatchBuffer
from .forward_budget import ForwardBudget
from .miner_call import MinerCall


def organic_item(request_id: str, request: MinerChatRequest, responses: list[MinerResponse], *,
                 task: Optional[str] = None, key_id: Optional[str] = None, search_query: Optional[str] = None,
                 n_results: Optional[int] = None) -> ScoringItem:
    """What the client asked (``task``: the request's own unless given) and every miner's answer, for the
    validator; web retrieval adds its ``search_query`` and ``n_results``.

    Every part was validated where it was made (the request, each ``MinerResponse``), and the validator
    validates the item it receives: no second validation on the hot path (tests/test_unvalidated_builds.py
    checks the item against a validated one).
    """
    return assembled(ScoringItem, {"request_id": request_id, "source": "organic", "task": task or request.task,
                                   "created_at": time.time(), "request": request, "responses": responses,
                                   "search_query": search_query, "n_results": n_results, "requests_by_uid": None,
                                   "key_id": key_id})


REFUSED = (400, 413, 422)  # the validator read the batch and will never take it as it is


class Forwarded(NamedTuple):
    """An item in the buffer with its JSON, written when it was submitted (see ``ScoringForwarder.submit``)."""

    item: ScoringItem
    data: bytes


class ScoringForwarder(BatchBuffer[Forwarded]):
    what = "scoring items"

    def __init__(self, client: SignedClient, validator_url: str, validator_hotkey: str, *, batch_size: int,
                 interval: float, max_buffer: int, max_bytes: int = 8 * 1024 * 1024,
                 budget: Optional[ForwardBudget] = None):
        super().__init__(batch_size=batch_size, interval=interval, max_buffer=max_buffer)
        self.max_bytes = max_bytes  # per POST: a batch of big items goes as several
        self.budget = budget  # None: every round goes
        self.posts = 0  # POSTs sent (for the record: batches, their parts, and the halves of refused ones)
        self.client = client
        self.validator_url = validator_url
        self.validator_hotkey = validator_hotkey
        self.waiting: set[asyncio.Task] = set()  # rounds whose miners are still answering

    def wants(self, uids: list[int], key_id: Optional[str]) -> bool:
        """Whether a round with these miners' answers goes to the validator (``api.forward_budget``)."""
        return self.budget is None or self.budget.admit(uids, key_id, time.monotonic())

    @property
    def over_budget(self) -> int:
        """Rounds not forwarded since start: over the worker's forward budget."""
        return 0 if self.budget is None else self.budget.refused

    def submit(self, item: ScoringItem) -> None:  # type: ignore[override]
        """Queue ``item``, written as JSON now: a batch of 256 items written at once held the event loop for
        milliseconds, one request at a time; item by item it is done with the rest of a response's books
        (``api.backlog``), while the worker waits for a miner."""
        super().submit(Forwarded(item, item.model_dump_json().encode()))

    def submit_when_done(self, calls: list[MinerCall], request_id: str, request: MinerChatRequest, *,
                         key_id: Optional[str] = None, then: Optional[Callable[[], None]] = None) -> None:
        """Queue every call's answer, as one organic item, once the last call has ended; then ``then()``."""
        running = [c.task for c in calls if c.task is not None and not c.task.done()]
        if not running:
            self._submit_round(calls, request_id, request, key_id, then)
            return

        async def wait_then_submit() -> None:
            await asyncio.gather(*running, return_exceptions=True)
            self._submit_round(calls, request_id, request, key_id, then)

        task = asyncio.create_task(wait_then_submit())
        self.waiting.add(task)
        task.add_done_callback(self.waiting.discard)

    def _submit_round(self, calls: list[MinerCall], request_id: str, request: MinerChatRequest,
                      key_id: Optional[str], then: Optional[Callable[[], None]]) -> None:
        try:
            if calls and self.wants([c.miner.uid for c in calls], key_id):
                self.submit(organic_item(request_id, request, [c.response_record() for c in calls],
                                         key_id=key_id))
        finally:
            if then is not None:
                then()

    async def settle_waiting(self, timeout: float) -> None:
        """At shutdown: let rounds still waiting for their miners finish, for up to ``timeout`` seconds."""
        if self.waiting:
            await asyncio.wait(self.waiting, timeout=timeout)

    async def send(self, batch: list[Forwarded]) -> int:
        """POST the batch in parts of at most ``max_bytes``; returns how many items the validator refused.

        A part the validator refuses as it is (malformed, or too large: ``REFUSED``) is halved and each half
        sent again, down to single items, which are then dropped: one bad item costs a few more POSTs, not
        the scoring of everything queued behind it (retried as a whole, it would block the buffer until it
        overflowed). Any other failure (the validator down, busy, or refusing our signature) raises, and the
        whole batch stays for a retry: parts already taken come back as duplicates, stored once.
        """
        items = [forwarded.item for forwarded in batch]
        encoded = [forwarded.data for forwarded in batch]
        refused: list[str] = []
        start = 0
        while start < len(batch):
            end, size = start + 1, len(encoded[start])
            while end < len(batch) and size + 1 + len(encoded[end]) <= self.max_bytes:
                size += 1 + len(encoded[end])
                end += 1
            await self._post(items[start:end], encoded[start:end], refused)
            start = end
        if refused:
            logger.error("the validator refused {} scoring item(s) as malformed or too large; dropped, "
                         "request ids: {}", len(refused), ", ".join(i[:64] for i in refused[:5]))
        return len(refused)

    async def _post(self, items: list[ScoringItem], encoded: list[bytes], refused: list[str]) -> None:
        try:
            self.posts += 1
            await self.client.post_json(self.validator_url, "/scoring", b'{"items":[' + b",".join(encoded) + b"]}",
                                        receiver=self.validator_hotkey, timeout=10.0)
        except SignedCallError as exc:
            if exc.status not in REFUSED:
                raise
            if len(items) == 1:
                refused.append(items[0].request_id)
                return
            half = len(items) // 2
            await self._post(items[:half], encoded[:half], refused)
            await self._post(items[half:], encoded[half:], refused)

"""The scoring queue under the load API workers put on it: batches, repeats, overflow, restarts, racing writers.

All on a real SQLite file, with the real scorer and score book.
"""

from __future__ import annotations

import asyncio
import threading
import time

from miner.backends.builtin import generate_tokens
from shared.schemas import MinerChatRequest, MinerResponse, SamplingParameters, ScoringItem
from validator.database import Database
from validator.rewards import Rules
from validator.scorer import Scorer
from validator.scores import ScoreBook
from validator.scoring_queue import ScoringQueue

SAMPLING = SamplingParameters(max_new_tokens=40)
MESSAGES = [{"role": "user", "content": "How do signed requests stop replays?"}]


def organic(request_id: str, seed: int = 3, uid: int = 1) -> ScoringItem:
    """An organic inference item that a good builtin miner answered exactly."""
    tokens = generate_tokens(MESSAGES, "builtin-small", seed, SAMPLING.model_dump())
    response = MinerResponse(uid=uid, hotkey=f"hotkey-{uid}", status="ok", chunks=tokens,
                             timings=[0.01 * (i + 1) for i in range(len(tokens))], model="builtin-small")
    request = MinerChatRequest(messages=MESSAGES, model="builtin-small", task="InferenceTask", seed=seed,
                               sampling_parameters=SAMPLING)
    return ScoringItem(request_id=request_id, created_at=time.time(), task="InferenceTask", request=request,
                       responses=[response])


def test_a_request_id_repeated_within_a_batch_is_stored_once(tmp_path):
    queue = ScoringQueue(Database(tmp_path / "validator.sqlite"), max_items=100)
    result = asyncio.run(queue.put([organic("a"), organic("b"), organic("a", seed=9)]))
    assert (result.accepted, result.duplicates, result.dropped) == (2, 1, 0)
    [(_, first), (_, second)] = queue.take(10)
    assert (first.request_id, first.request.seed, second.request_id) == ("a", 3, "b")  # the first copy is kept
    assert sum(result.responses.values()) == 2


def test_items_survive_a_restart_as_they_were_put(tmp_path):
    path = tmp_path / "validator.sqlite"
    items = [organic(f"r{i}", seed=i) for i in range(5)]
    database = Database(path)
    asyncio.run(ScoringQueue(database, max_items=100).put(items))
    database.close()

    database = Database(path)  # a new process: nothing in memory, everything read back from the file
    queue = ScoringQueue(database, max_items=100)
    assert [item for _, item in queue.take(10)] == items
    book = ScoreBook(database, alpha=0.5)
    assert Scorer(database, queue, book, rules=Rules(penalty=2.0)).score_batch() == 5
    assert book.rewards[1] == 5 and book.last_reward[1] > 0.9  # every answer was exact
    assert queue.take(10) == []


def test_overflow_drops_the_oldest_and_only_the_newest_are_scored(tmp_path):
    database = Database(tmp_path / "validator.sqlite")
    queue = ScoringQueue(database, max_items=3)
    first = asyncio.run(queue.put([organic("r0"), organic("r1")]))
    second = asyncio.run(queue.put([organic("r2"), organic("r3"), organic("r4")]))
    assert (first.dropped, second.dropped) == (0, 2)
    assert [item.request_id for _, item in queue.take(10)] == ["r2", "r3", "r4"]
    book = ScoreBook(database, alpha=0.5)
    assert Scorer(database, queue, book, rules=Rules(penalty=2.0)).score_batch() == 3
    assert book.rewards[1] == 3 and not queue.handoff  # nothing dropped or scored is held in memory
    stats = asyncio.run(queue.stats())
    assert (stats["received"], stats["dropped"], stats["scored"], stats["pending"]) == (5, 2, 3, 0)


async def test_racing_writers_and_the_scorer_score_every_item_once(tmp_path):
    database = Database(tmp_path / "validator.sqlite")
    queue = ScoringQueue(database, max_items=10_000)
    book = ScoreBook(database, alpha=0.1)
    scorer = Scorer(database, queue, book, rules=Rules(penalty=2.0), batch_size=25)
    ids = [f"req-{i}" for i in range(300)]
    # Two API workers forward overlapping batches (a retried send repeats part of the last one).
    batches = [[organic(request_id) for request_id in ids[start:start + 40]] for start in range(0, 300, 30)]
    stop = threading.Event()

    def score_until_stopped() -> None:
        while not stop.is_set():
            scorer.score_batch()

    scoring = threading.Thread(target=score_until_stopped)
    scoring.start()
    try:
        results = await asyncio.gather(*(queue.put(batch) for batch in batches + batches[::3]))
    finally:
        stop.set()
        scoring.join()
    while scorer.score_batch():
        pass
    assert sum(r.accepted for r in results) == 300
    assert sum(r.accepted + r.duplicates for r in results) == sum(len(b) for b in batches + batches[::3])
    assert book.rewards[1] == 300  # one reward per item, none twice
    stats = await queue.stats()
    assert (stats["received"], stats["scored"], stats["pending"]) == (300, 300, 0)
    assert not queue.handoff

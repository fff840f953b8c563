"""Scoring throughput and the weight step for 4,096 uids, each against a plain-Python baseline.

    .venv/bin/python bench/bench_scoring.py

Prints responses scored per second through the real scorer (rewards, moving
averages, one SQLite transaction per batch), and the time of one weight step
(normalise 4,096 scores, record them in a 4,096-neuron local subnet file),
with the same work done by straightforward Python loops as the baseline.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.builtin_generator import answer_question, generate_tokens  # noqa: E402
from shared.chain import LocalChain  # noqa: E402
from shared.corpus import Corpus  # noqa: E402
from shared.schemas import MinerChatRequest, MinerResponse, SamplingParameters, ScoringItem  # noqa: E402
from validator.database import Database  # noqa: E402
from validator.rewards import Rules  # noqa: E402
from validator.scorer import Scorer  # noqa: E402
from validator.scores import ScoreBook  # noqa: E402
from validator.scoring_queue import ScoringQueue  # noqa: E402

MINERS_PER_ITEM = 5
UIDS = 4096


def make_items(count: int, rng: random.Random) -> list[ScoringItem]:
    corpus = Corpus.load()
    items = []
    for index in range(count):
        qa = index % 2 == 1
        content = rng.choice(rng.choice(corpus.passages).questions) if qa else f"Explain topic {index}."
        sampling = SamplingParameters(max_new_tokens=64)
        request = MinerChatRequest(messages=[{"role": "user", "content": content}], model="builtin-small",
                                   task="WebQuestionAnsweringTask" if qa else "InferenceTask", seed=index,
                                   sampling_parameters=sampling)
        messages = [{"role": "user", "content": content}]
        responses = []
        for uid in range(1, MINERS_PER_ITEM + 1):
            if qa:
                tokens = answer_question(messages, "builtin-small", index, 64)
            else:
                tokens = generate_tokens(messages, "builtin-small", index, sampling.model_dump())
            responses.append(MinerResponse(uid=uid, hotkey=f"hk{uid}", status="ok", chunks=tokens,
                                           timings=[0.01 * (i + 1) for i in range(len(tokens))],
                                           model="builtin-small"))
        items.append(ScoringItem(request_id=f"bench-{index}", created_at=time.time(), task=request.task,
                                 request=request, responses=responses))
    return items


def scoring_throughput(items: list[ScoringItem], directory: Path) -> float:
    database = Database(directory / "bench.sqlite")
    queue = ScoringQueue(database, max_items=len(items) + 1)
    asyncio.run(queue.put(items))
    scorer = Scorer(database, queue, ScoreBook(database, alpha=0.1), rules=Rules(penalty=2.0))
    started = time.perf_counter()
    while scorer.score_batch():
        pass
    elapsed = time.perf_counter() - started
    database.close()
    return len(items) * MINERS_PER_ITEM / elapsed


def weight_step_numpy(book: ScoreBook, chain: LocalChain) -> None:
    asyncio.run(chain.set_weights(book.weights()))


def weight_step_python(scores: dict[int, float], chain: LocalChain) -> None:
    asyncio.run(chain.set_weights(normalise_python(scores)))


def ema_python(scores: dict[int, float], rewards: dict[int, float], alpha: float) -> None:
    for uid, reward in rewards.items():
        scores[uid] = (1 - alpha) * scores.get(uid, 0.0) + alpha * reward


def normalise_python(scores: dict[int, float]) -> dict[int, float]:
    positive = {uid: max(score, 0.0) for uid, score in scores.items()}
    total = sum(positive.values())
    return {uid: value / total for uid, value in positive.items() if value > 0}


def timed(function, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        items = make_items(2000, rng)
        rate = scoring_throughput(items, directory)
        print(f"scoring: {rate:,.0f} responses/s ({len(items)} items x {MINERS_PER_ITEM} miners, "
              f"half exact inference, half question answering; SQLite, one transaction per 200 items)")

        neurons = [{"uid": 0, "hotkey": "vali", "stake": 1.0, "validator_permit": True}] + [
            {"uid": uid, "hotkey": f"hk{uid}", "stake": 1.0} for uid in range(1, UIDS)]
        subnet = directory / "subnet.json"
        subnet.write_text(json.dumps({"netuid": 1, "neurons": neurons, "weights": {}}))
        chain = LocalChain(subnet, hotkey="vali")
        book = ScoreBook(Database(directory / "weights.sqlite"), alpha=0.1)
        rewards = {uid: rng.random() for uid in range(1, UIDS)}
        book.apply({uid: (f"hk{uid}", r) for uid, r in rewards.items()})
        plain = dict(rewards)

        signed = {uid: (f"hk{uid}", r) for uid, r in rewards.items()}
        ema_np = timed(lambda: book.apply(signed), 20)
        ema_py = timed(lambda: ema_python(plain, rewards, 0.1), 20)
        norm_np = timed(book.weights, 50)
        norm_py = timed(lambda: normalise_python(plain), 50)
        step_np = timed(lambda: weight_step_numpy(book, chain), 10)
        step_py = timed(lambda: weight_step_python(plain, chain), 10)
        print(f"moving average, {UIDS} uids at once: ScoreBook.apply (a hotkey check per uid in Python, then one "
              f"numpy blend) {ema_np * 1e3:.2f} ms vs a plain-Python blend without the checks {ema_py * 1e3:.2f} ms "
              f"(ratio {ema_py / ema_np:.2f}x)")
        print(f"normalise {UIDS} scores: numpy {norm_np * 1e3:.3f} ms vs python {norm_py * 1e3:.3f} ms "
              f"(ratio {norm_py / norm_np:.2f}x)")
        print(f"weight step, {UIDS} uids (normalise + record in the local subnet file): "
              f"{step_np * 1e3:.1f} ms vs python baseline {step_py * 1e3:.1f} ms (ratio {step_py / step_np:.2f}x)")


if __name__ == "__main__":
    main()

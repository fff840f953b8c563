"""Reward models, the score book, the scorer and the weight setter, on real SQLite and real chains."""

from __future__ import annotations

import asyncio
import json
import time

import bittensor as bt
import pytest
from fake_substrate import FakeNeuron, FakeSubstrate

from miner.backends.builtin import answer_question, generate_tokens
from shared.chain import LocalChain, Neuron, SubnetState
from shared.chain.bittensor_chain import BittensorChain
from shared.corpus import Corpus
from shared.schemas import MinerChatRequest, MinerResponse, SamplingParameters, ScoringItem
from validator.database import Database
from validator.rewards import BuiltinAnswers, CopyVerdict, find_copies, reward_item
from validator.scorer import Scorer
from validator.scores import ScoreBook
from validator.scoring_queue import ScoringQueue
from validator.weights import WeightSetter

MESSAGES = [{"role": "user", "content": "Explain replay protection in simple terms."}]
SAMPLING = SamplingParameters(temperature=0.7, max_new_tokens=64)
HOTKEYS = {uid: f"hotkey-{uid}" for uid in range(8)}


def answer(uid: int, text: str, seconds: float = 0.1, status: str = "ok", model: str = "builtin-small"):
    words = text.split(" ")
    chunks = [w + " " for w in words[:-1]] + words[-1:]
    return MinerResponse(uid=uid, hotkey=HOTKEYS[uid], status=status, chunks=chunks if text else [],
                         timings=[seconds * (i + 1) / len(chunks) for i in range(len(chunks))] if text else [],
                         model=model)


def item(task: str, responses: list[MinerResponse], content: str = MESSAGES[0]["content"],
         request_id: str = "r1") -> ScoringItem:
    request = MinerChatRequest(messages=[{"role": "user", "content": content}], model="builtin-small",
                               task=task, seed=5, sampling_parameters=SAMPLING)
    return ScoringItem(request_id=request_id, created_at=time.time(), task=task, request=request,
                       responses=responses)


def exact_text() -> str:
    return "".join(generate_tokens(MESSAGES, "builtin-small", 5, SAMPLING.model_dump()))


def test_inference_reward_is_exact_agreement_times_speed():
    right = exact_text()
    wrong = right.replace(right.split()[2], "banana", 1)
    rewards = reward_item(item("InferenceTask", [answer(1, right, 0.1), answer(2, right, 5.0), answer(3, wrong),
                                                 answer(4, "", status="error"), answer(5, right, status="timeout")]),
                          timeout=10.0, copycat_penalty=2.0)
    assert rewards[1] == pytest.approx(0.995)
    assert rewards[2] == pytest.approx(0.75)
    assert rewards[3] == rewards[4] == rewards[5] == 0.0


def test_identical_inference_answers_are_not_copycats():
    right = exact_text()
    rewards = reward_item(item("InferenceTask", [answer(1, right, 0.1), answer(2, right, 0.2)]),
                          timeout=10.0, copycat_penalty=2.0)
    assert rewards[1] > 0.9 and rewards[2] > 0.9


def test_question_answering_rewards_relevance_and_punishes_copycats():
    question = Corpus.load().passages[14].questions[0]
    messages = [{"role": "user", "content": question}]
    honest = "".join(answer_question(messages, "hotkey-1", 5, 160))
    other = "".join(answer_question(messages, "hotkey-2", 5, 160))
    assert honest != other  # two honest miners word it differently
    off_topic = "Stake and weights decide how emissions are split among validators on a subnet."
    rewards = reward_item(item("WebQuestionAnsweringTask", [answer(1, honest, 0.1), answer(2, other, 0.2),
                                                            answer(3, honest, 0.5), answer(4, off_topic, 0.1)],
                               content=question),
                          timeout=10.0, copycat_penalty=2.0)
    assert rewards[1] > 0.4 and rewards[2] > 0.4
    assert rewards[3] == -2.0  # the same words as uid 1, later
    assert rewards[4] < 0.5 * min(rewards[1], rewards[2])


def test_identical_answers_within_the_copy_margin_get_no_verdict_and_later_copies_are_still_caught():
    question = Corpus.load().passages[14].questions[0]
    messages = [{"role": "user", "content": question}]
    honest = "".join(answer_question(messages, "hotkey-1", 5, 160))
    other = "".join(answer_question(messages, "hotkey-2", 5, 160))
    responses = [answer(1, honest, 0.500), answer(2, honest, 0.480), answer(3, honest, 0.9), answer(4, other, 0.2)]
    scoring_item = item("WebQuestionAnsweringTask", responses, content=question)
    copies = find_copies(scoring_item, margin=0.05)
    assert copies == CopyVerdict(copied={3}, unclear={1, 2})  # 20 ms apart: nobody can tell who copied
    rewards = reward_item(scoring_item, timeout=10.0, copycat_penalty=2.0)
    assert set(rewards) == {3, 4} and rewards[3] == -2.0 and rewards[4] > 0.4
    strict = reward_item(scoring_item, timeout=10.0, copycat_penalty=2.0, copies=find_copies(scoring_item, 0.0))
    assert strict[1] == strict[3] == -2.0 and strict[2] > 0.4  # no margin: the earlier by 20 ms wins


def test_remembered_builtin_answers_are_what_the_generator_gives_for_that_very_request():
    answers = BuiltinAnswers(size=64)
    base = {"messages": MESSAGES, "model": "builtin-small", "task": "InferenceTask", "seed": 5,
            "sampling_parameters": SAMPLING.model_dump()}
    variants = [base, {**base, "seed": 6}, {**base, "model": "builtin-large"},
                {**base, "messages": [{"role": "user", "content": "Something else entirely."}]},
                {**base, "messages": [{"role": "system", "content": "Be brief."}, *MESSAGES]},
                {**base, "messages": [{"role": "user", "content": [{"type": "text", "text": "In parts."}]}]}]
    variants += [{**base, "sampling_parameters": {**base["sampling_parameters"], name: value}}
                 for name, value in (("temperature", 0.0), ("top_p", 0.5), ("top_k", 5), ("max_new_tokens", 30))]
    for _ in range(2):  # the second round is served from memory
        for fields in variants:
            request = MinerChatRequest(**fields)
            scoring_item = ScoringItem(request_id="r", created_at=0.0, task="InferenceTask", request=request,
                                       responses=[answer(1, "x")])
            expected = "".join(generate_tokens([m.model_dump() for m in request.messages], request.model,
                                               request.seed, request.sampling_parameters.model_dump()))
            assert answers.text(scoring_item, request.model) == expected, fields
    assert (answers.misses, answers.hits) == (len(variants), len(variants))


def test_remembered_builtin_answers_are_bounded():
    answers = BuiltinAnswers(size=2)
    items = [item("InferenceTask", [answer(1, "x")], content=f"question {i}") for i in range(3)]
    for scoring_item in items:
        answers.text(scoring_item, "builtin-small")
    assert len(answers.texts) == 2
    answers.text(items[0], "builtin-small")  # the least recently used went first
    assert (answers.misses, answers.hits) == (4, 0)


def test_a_few_rewards_at_a_time_blend_exactly_like_many_at_once(tmp_path):
    rewards = {uid: (f"hotkey-{uid}", (uid % 7) / 7 - 0.2) for uid in range(40)}
    one_by_one = ScoreBook(Database(tmp_path / "a.sqlite"), alpha=0.3)
    at_once = ScoreBook(Database(tmp_path / "b.sqlite"), alpha=0.3)
    for _ in range(3):
        for uid, reward in rewards.items():
            one_by_one.apply({uid: reward})
        at_once.apply(rewards)
    assert one_by_one.scores.tolist() == at_once.scores.tolist()  # bit for bit, not approximately
    assert one_by_one.rewards.tolist() == at_once.rewards.tolist() == [3] * 40
    assert one_by_one.last_reward.tolist() == at_once.last_reward.tolist()


def state_with(hotkeys: dict[int, str]) -> SubnetState:
    return SubnetState(1, 1, tuple(Neuron(uid, hk, "", 1.0, 0.0, False, None) for uid, hk in hotkeys.items()))


def test_scores_survive_a_restart_and_reset_on_a_new_hotkey(tmp_path):
    path = tmp_path / "validator.sqlite"
    database = Database(path)
    book = ScoreBook(database, alpha=0.5)
    changed = book.apply({1: ("hotkey-1", 1.0), 2: ("hotkey-2", 0.4)})
    with database.transaction() as db:
        book.save(db, changed)
    database.close()

    reloaded = ScoreBook(Database(path), alpha=0.5)
    assert reloaded.scores[1] == pytest.approx(0.5) and reloaded.scores[2] == pytest.approx(0.2)
    assert reloaded.weights() == pytest.approx({1: 0.5 / 0.7, 2: 0.2 / 0.7})

    assert reloaded.align(state_with({1: "hotkey-1", 2: "someone-new"})) == [2]
    assert reloaded.scores[2] == 0.0 and reloaded.hotkeys[2] == "someone-new"
    assert reloaded.scores[1] == pytest.approx(0.5)
    # a late reward for the old hotkey is not credited to the new owner
    assert reloaded.apply({2: ("hotkey-2", 1.0)}) == []


def test_each_item_is_scored_once(tmp_path):
    database = Database(tmp_path / "validator.sqlite")
    queue = ScoringQueue(database, max_items=100)
    book = ScoreBook(database, alpha=0.1)
    scorer = Scorer(database, queue, book, timeout=10.0, copycat_penalty=2.0)
    organic = item("InferenceTask", [answer(1, exact_text())], request_id="organic-1")
    asyncio.run(queue.put([organic]))
    assert scorer.score_batch() == 1
    asyncio.run(queue.put([organic]))  # forwarded again: a duplicate, not a new item
    assert scorer.score_batch() == 0
    assert book.rewards[1] == 1
    stats = asyncio.run(queue.stats())
    assert (stats["received"], stats["duplicates"], stats["scored"], stats["pending"]) == (1, 1, 1, 0)


def local_subnet_file(path, rate_limit: float) -> LocalChain:
    neurons = [{"uid": 0, "hotkey": "vali", "stake": 100.0, "validator_permit": True}] + [
        {"uid": uid, "hotkey": HOTKEYS[uid], "stake": 1.0, "axon": f"127.0.0.1:{9000 + uid}"} for uid in (1, 2, 3)
    ]
    path.write_text(json.dumps({"netuid": 1, "block": 1, "weights_rate_limit_seconds": rate_limit,
                                "neurons": neurons, "weights": {}}))
    return LocalChain(path, hotkey="vali")


async def test_weights_close_the_loop_and_a_rate_limited_set_is_retried(tmp_path):
    chain = local_subnet_file(tmp_path / "subnet.json", rate_limit=1.0)
    database = Database(tmp_path / "validator.sqlite")
    book = ScoreBook(database, alpha=1.0)
    book.apply({1: ("hotkey-1", 0.9), 2: ("hotkey-2", 0.1), 3: ("hotkey-3", -2.0)})
    setter = WeightSetter(chain, book, interval=3600)

    first = await setter.step()
    assert first.success and first.uids == (1, 2)
    state = await chain.metagraph()
    assert state.by_uid(1).incentive == pytest.approx(0.9) and state.by_uid(3).incentive == 0.0

    book.apply({1: ("hotkey-1", 0.2), 2: ("hotkey-2", 0.8)})
    limited = await setter.step()
    assert limited.rate_limited and not limited.success

    runner = asyncio.create_task(setter.run())
    try:
        for _ in range(50):  # the interval is an hour: only the retry can set these weights
            await asyncio.sleep(0.1)
            if (await chain.metagraph()).by_uid(2).incentive > 0.5:
                break
        assert (await chain.metagraph()).by_uid(2).incentive == pytest.approx(0.8)
    finally:
        runner.cancel()


async def test_weights_reach_the_bittensor_chain_with_the_right_uids(tmp_path, monkeypatch):
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "symbols.json"))
    alice, bob, charlie, dave = (bt.sp_core.Keypair.create_from_uri(f"//{n}") for n in ("Alice", "Bob", "Charlie",
                                                                                         "Dave"))
    fake = FakeSubstrate(netuid=7, neurons=[FakeNeuron(alice.ss58_address, stake=1000.0, validator_permit=True),
                                            FakeNeuron(bob.ss58_address), FakeNeuron(charlie.ss58_address),
                                            FakeNeuron(dave.ss58_address)])
    chain = BittensorChain("finney", 7, alice, substrate=fake)
    book = ScoreBook(Database(tmp_path / "validator.sqlite"), alpha=1.0)
    book.apply({1: (bob.ss58_address, 0.25), 3: (dave.ss58_address, 0.75), 2: (charlie.ss58_address, 0.0)})
    try:
        result = await WeightSetter(chain, book, interval=3600).step()
    finally:
        await chain.close()
    assert result.success, result.message
    [call] = fake.submitted
    assert call.function == "set_mechanism_weights"
    assert call.params["dests"] == [1, 3]
    assert call.params["weights"] == [21845, 65535]


def test_a_caught_copycat_restarts_from_the_penalty(tmp_path):
    database = Database(tmp_path / "validator.sqlite")
    queue = ScoringQueue(database, max_items=100)
    book = ScoreBook(database, alpha=0.1)
    book.apply({uid: (HOTKEYS[uid], 0.9) for uid in (1, 3)})
    before = float(book.scores[3])
    question = Corpus.load().passages[14].questions[0]
    honest = "".join(answer_question([{"role": "user", "content": question}], "hotkey-1", 5, 160))
    asyncio.run(queue.put([item("WebQuestionAnsweringTask", [answer(1, honest, 0.1), answer(3, honest, 0.4)],
                                content=question, request_id="copied")]))
    Scorer(database, queue, book, timeout=10.0, copycat_penalty=2.0).score_batch()
    assert before > 0 and book.scores[3] == -2.0  # not an average that a few good rounds wash out
    assert book.scores[1] > before  # the miner that answered first is rewarded as usual

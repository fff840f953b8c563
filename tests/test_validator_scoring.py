"""Reward rules, the score book, organic bounds, the scorer and the weight setter, on real SQLite and real chains."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Optional

import bittensor as bt
import pytest
from fake_substrate import FakeNeuron, FakeSubstrate

from shared.builtin_generator import generate_tokens
from shared.chain import LocalChain, Neuron, SubnetState
from shared.chain.bittensor_chain import BittensorChain
from shared.corpus import Corpus
from shared.schemas import MinerChatRequest, MinerResponse, SamplingParameters, ScoringItem, key_id
from validator.database import Database
from validator.exact_check import BuiltinAnswers, expected_text
from validator.organic import OrganicEvidence
from validator.rewards import Rules, judge_item, reward_item, speed_factor
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


def synthetic_round(task: str, texts: dict[int, str], content: str = MESSAGES[0]["content"],
                    seconds: Optional[dict[int, float]] = None, model: str = "builtin-small") -> ScoringItem:
    """A synthetic round in which uid u was sent seed 100 + u, answered with ``texts[u]``."""
    requests = {uid: MinerChatRequest(messages=[{"role": "user", "content": content}], model="builtin-small",
                                      task=task, seed=100 + uid, sampling_parameters=SAMPLING) for uid in texts}
    responses = [answer(uid, text, (seconds or {}).get(uid, 0.1), model=model) for uid, text in texts.items()]
    return ScoringItem(request_id="round", source="synthetic", created_at=time.time(), task=task,
                       request=requests[min(texts)], responses=responses, requests_by_uid=requests)


def honest(task: str, uid: int, content: str = MESSAGES[0]["content"]) -> str:
    """What an honest builtin miner answers to uid's request of ``synthetic_round``."""
    request = MinerChatRequest(messages=[{"role": "user", "content": content}], model="builtin-small", task=task,
                               seed=100 + uid, sampling_parameters=SAMPLING)
    return expected_text(request, "builtin-small")


def exact_text() -> str:
    return "".join(generate_tokens(MESSAGES, "builtin-small", 5, SAMPLING.model_dump()))


RULES = Rules(penalty=2.0, speed_scale=5.0)  # round numbers for the arithmetic below
QUESTION = Corpus.load().passages[14].questions[0]


def test_inference_reward_is_agreement_with_the_exact_answer_times_speed():
    right = exact_text()
    words = right.split(" ")
    one_wrong = right.replace(words[2], "banana", 1)
    half = " ".join(words[: len(words) // 2])
    rewards = reward_item(item("InferenceTask", [answer(1, right, 0.1), answer(2, right, 5.0), answer(3, one_wrong),
                                                 answer(4, "", status="error"), answer(5, right, status="timeout"),
                                                 answer(6, half), answer(7, right + " and some padding")]), RULES)
    assert rewards[1] == pytest.approx(5 / 5.1)
    assert rewards[2] == pytest.approx(0.5)  # the speed factor halves at 5 s
    assert rewards[3] == pytest.approx((len(words) - 1) / len(words) * 5 / 5.1)  # one word in n wrong: 1/n less
    assert rewards[4] == rewards[5] == 0.0
    assert rewards[6] == pytest.approx(len(words) // 2 / len(words) * 5 / 5.1)  # cut short: in proportion
    assert rewards[7] < rewards[1]  # padding past the end counts against it the same way


def test_speed_costs_at_least_15_percent_at_1_5_seconds():
    defaults = Rules()  # what a validator runs with
    fast, slow = answer(1, "x", seconds=0.05), answer(2, "x", seconds=1.5)
    assert speed_factor(slow, defaults) <= 0.85 * speed_factor(fast, defaults)
    # ... but not so much that a slow exact answer falls below a fast one with a third of its words wrong
    assert speed_factor(answer(3, "x", seconds=2.5), defaults) > 0.7 * speed_factor(fast, defaults)
    assert speed_factor(answer(4, "x", seconds=60.0), defaults) > 0  # a slow right answer still beats a wrong one


def test_identical_inference_answers_are_not_copycats():
    right = exact_text()
    rewards = reward_item(item("InferenceTask", [answer(1, right, 0.1), answer(2, right, 0.2)]), RULES)
    assert rewards[1] > 0.9 and rewards[2] > 0.9


def test_question_answering_is_judged_against_the_validators_own_answer():
    task = "WebQuestionAnsweringTask"
    passage = Corpus.load().passages[14].text
    texts = {1: honest(task, 1, QUESTION), 2: honest(task, 2, QUESTION), 3: passage,
             4: " ".join(honest(task, 4, QUESTION).split()[:4])}
    assert texts[1] != texts[2]  # every miner has its own seed: honest answers differ
    judgement = judge_item(synthetic_round(task, texts, QUESTION), RULES)
    assert judgement.rewards[1] > 0.9 and judgement.rewards[2] > 0.9
    assert judgement.caught.keys() == {3, 4}  # the source passage, a stub: not answers to their requests
    assert judgement.rewards[3] == judgement.rewards[4] == -2.0


def test_an_answer_stopped_early_on_purpose_is_caught():
    task = "InferenceTask"
    full = honest(task, 2).split(" ")
    cut = " ".join(full[: len(full) * 6 // 10])  # every word right, the last 40% never generated
    judgement = judge_item(synthetic_round(task, {1: honest(task, 1), 2: cut}), RULES)
    assert judgement.caught.keys() == {2} and "cut short" in judgement.caught[2]
    organic = reward_item(item(task, [answer(1, " ".join(exact_text().split(" ")[:10]))]), RULES)
    assert 0 < organic[1] < 0.5  # organic: the client chose the request; in proportion, never caught


def test_copies_are_caught_whoever_answered_first_and_paraphrases_too():
    task = "WebQuestionAnsweringTask"
    original = honest(task, 1, QUESTION)
    paraphrase = original.replace(original.split()[3], original.split()[3] + "s", 1).replace(" the ", " a ", 1)
    texts = {1: original, 2: original, 3: paraphrase, 4: honest(task, 4, QUESTION)}
    # uid 2 copies uid 1 and answers *first*; uid 3 changes a few characters; uid 4 is slow and honest
    judgement = judge_item(synthetic_round(task, texts, QUESTION, seconds={1: 1.5, 2: 0.01, 3: 0.02, 4: 3.0}), RULES)
    assert set(judgement.caught) == {2, 3}
    assert "uid 1" in judgement.caught[2] and "uid 1" in judgement.caught[3]
    assert judgement.rewards[1] > 0.7 and judgement.rewards[4] > 0.5  # arrival order frames nobody


def test_framing_with_the_slow_miners_words_is_impossible():
    task = "InferenceTask"
    slow = honest(task, 1)
    # the framer cannot know uid 1's seed; its best guess is the answer to the shared prompt's usual seed
    guess = expected_text(MinerChatRequest(messages=MESSAGES, model="builtin-small", task=task, seed=5,
                                           sampling_parameters=SAMPLING), "builtin-small")
    judgement = judge_item(synthetic_round(task, {1: slow, 2: guess}, seconds={1: 1.5, 2: 0.01}), RULES)
    assert judgement.caught.keys() == {2} and judgement.rewards[1] > 0.7


def test_an_answer_in_another_model_than_asked_is_caught_and_unjudgeable_models_earn_nothing():
    task = "InferenceTask"
    relabelled = synthetic_round(task, {1: honest(task, 1), 2: "anything at all"})
    relabelled.responses[1] = relabelled.responses[1].model_copy(update={"model": "mystery-model"})
    judgement = judge_item(relabelled, RULES)
    assert judgement.caught.keys() == {2} and judgement.rewards[1] > 0.9
    unknown = synthetic_round(task, {1: "words"})
    for request in unknown.requests_by_uid.values():
        request.model = "mystery-model"
    unknown.responses[0] = unknown.responses[0].model_copy(update={"model": "mystery-model"})
    assert judge_item(unknown, RULES).rewards == {1: 0.0}  # nobody here can judge it: 0, not "no verdict"


def test_remembered_builtin_answers_are_what_the_generator_gives_for_that_very_request():
    answers = BuiltinAnswers(size=64)
    base = {"messages": MESSAGES, "model": "builtin-small", "task": "InferenceTask", "seed": 5,
            "sampling_parameters": SAMPLING.model_dump()}
    variants = [base, {**base, "seed": 6}, {**base, "model": "builtin-large"},
                {**base, "task": "WebQuestionAnsweringTask"},
                {**base, "messages": [{"role": "user", "content": "Something else entirely."}]},
                {**base, "messages": [{"role": "system", "content": "Be brief."}, *MESSAGES]},
                {**base, "messages": [{"role": "user", "content": [{"type": "text", "text": "In parts."}]}]}]
    variants += [{**base, "sampling_parameters": {**base["sampling_parameters"], name: value}}
                 for name, value in (("temperature", 0.0), ("top_p", 0.5), ("top_k", 5), ("max_new_tokens", 30))]
    for _ in range(2):  # the second round is served from memory
        for fields in variants:
            request = MinerChatRequest(**fields)
            assert answers.text(request, request.model) == expected_text(request, request.model), fields
    assert (answers.misses, answers.hits) == (len(variants), len(variants))


def test_remembered_builtin_answers_are_bounded():
    answers = BuiltinAnswers(size=2)
    items = [item("InferenceTask", [answer(1, "x")], content=f"question {i}") for i in range(3)]
    for scoring_item in items:
        answers.text(scoring_item.request, "builtin-small")
    assert len(answers.texts) == 2
    answers.text(items[0].request, "builtin-small")  # the least recently used went first
    assert (answers.misses, answers.hits) == (4, 0)


def test_a_miner_is_scored_on_the_whole_task_mix(tmp_path):
    book = ScoreBook(Database(tmp_path / "v.sqlite"), alpha=1.0,
                     task_weights={"InferenceTask": 0.4, "WebQuestionAnsweringTask": 0.4, "WebRetrievalTask": 0.2})
    book.apply({1: ("hotkey-1", 1.0), 2: ("hotkey-2", 1.0)}, "InferenceTask")  # 2 serves inference only
    book.apply({1: ("hotkey-1", 0.9)}, "WebQuestionAnsweringTask")
    book.apply({1: ("hotkey-1", 0.5)}, "WebRetrievalTask")
    assert book.scores[1] == pytest.approx(0.4 + 0.36 + 0.1) and book.scores[2] == pytest.approx(0.4)
    assert book.apply({1: ("hotkey-1", 1.0)}, "ProgrammingTask") == []  # not in the mix: not counted


def test_a_specialist_earns_nothing_until_it_serves_the_whole_mix(tmp_path):
    mix = {"InferenceTask": 0.4, "WebQuestionAnsweringTask": 0.4, "WebRetrievalTask": 0.2}
    book = ScoreBook(Database(tmp_path / "v.sqlite"), alpha=1.0, task_weights=mix, min_coverage=1.0)
    everything = set(mix)
    book.apply({1: ("hotkey-1", 1.0), 2: ("hotkey-2", 1.0), 3: ("hotkey-3", 1.0)}, "InferenceTask")
    book.restart({3: "hotkey-3"}, -2.0)  # uid 3 was caught: a negative score is never lifted by the gate
    assert book.set_coverage(2, "hotkey-2", {"InferenceTask"}, everything) == [2]
    book.set_coverage(3, "hotkey-3", {"InferenceTask"}, everything)
    book.set_coverage(1, "hotkey-1", everything, everything)
    assert book.scores[1] == pytest.approx(0.4) and book.scores[2] == 0.0 and book.scores[3] < 0
    assert 2 not in book.weights() and book.table()[1]["covers_mix"] is False
    book.apply({2: ("hotkey-2", 1.0)}, "InferenceTask")  # honest work on its one task still earns nothing
    assert book.scores[2] == 0.0
    # a task no miner serves is never asked, so it is not held against anyone
    assert book.set_coverage(2, "hotkey-2", {"InferenceTask", "WebQuestionAnsweringTask"},
                             {"InferenceTask", "WebQuestionAnsweringTask"}) == [2]
    assert book.scores[2] == pytest.approx(0.4)
    assert book.set_coverage(2, "hotkey-2", {"InferenceTask"}, everything) == [2]  # and back
    assert book.scores[2] == 0.0
    assert book.set_coverage(2, "someone-else", everything, everything) == []  # another hotkey's answer
    lenient = ScoreBook(Database(tmp_path / "w.sqlite"), alpha=1.0, task_weights=mix, min_coverage=0.4)
    lenient.apply({2: ("hotkey-2", 1.0)}, "InferenceTask")
    assert lenient.set_coverage(2, "hotkey-2", {"InferenceTask"}, everything) == []  # 0.4 of the mix is enough
    assert lenient.scores[2] == pytest.approx(0.4)


def test_no_api_key_can_move_a_miner_by_more_than_the_organic_bound(tmp_path):
    database = Database(tmp_path / "v.sqlite")
    book = ScoreBook(database, alpha=0.1, task_weights={"InferenceTask": 1.0})
    book.apply({1: ("hotkey-1", 1.0), 2: ("hotkey-2", 1.0)}, "InferenceTask")
    evidence = OrganicEvidence(database, bound=0.1, alpha=0.5, per_key_cap=20, per_miner_cap=50, window=60)
    before = float(book.scores[1])
    counted = 0
    for i in range(1000):  # one key hammers uid 1 with requests it fails
        factor = evidence.add(1, "hotkey-1", "griefer", 0.0, now=1000.0 + i * 0.001)
        if factor is not None:
            counted += 1
            book.set_organic_factor(1, "hotkey-1", factor)
    assert counted == 20  # the per-key cap
    assert book.scores[1] >= 0.9 * before - 1e-9  # the bound, however many requests
    for i in range(1000):  # many keys, each within its cap: the per-miner cap and the bound still hold
        evidence.add(1, "hotkey-1", f"key-{i}", 0.0, now=1000.5)
    assert evidence.factor(1) >= 0.9
    for i in range(100):  # a miner's owner sends itself perfect traffic: organic evidence never raises a score
        assert evidence.add(2, "hotkey-2", "owner", 1.0, now=5000.0 + i) in (None, 1.0)


def test_organic_answers_to_unadvertised_tasks_or_models_are_not_held_against_the_miner(tmp_path):
    database = Database(tmp_path / "v.sqlite")
    queue = ScoringQueue(database, max_items=100)
    book = ScoreBook(database, alpha=0.1, task_weights={"InferenceTask": 1.0})
    evidence = OrganicEvidence(database, bound=0.1, alpha=0.5, per_key_cap=20, per_miner_cap=50, window=60)
    scorer = Scorer(database, queue, book, rules=RULES, organic=evidence,
                    advertises=lambda uid, task, model: model in (None, "builtin-small"))
    pinned = item("InferenceTask", [answer(1, "", status="error")], request_id="pinned")
    pinned.request.model = "a-model-it-never-offered"
    pinned.key_id = key_id("sk-griefer")
    fair = item("InferenceTask", [answer(1, "", status="error")], request_id="fair")
    fair.key_id = key_id("sk-griefer")
    asyncio.run(queue.put([pinned]))
    scorer.score_batch()
    assert evidence.factor(1) == 1.0
    asyncio.run(queue.put([fair]))
    scorer.score_batch()
    assert 0.9 <= evidence.factor(1) < 1.0  # a fair request it failed counts, within the bound


def test_answers_their_clients_cut_off_are_not_held_against_the_miner(tmp_path):
    """A key that leaves every stream after its first words (or reads too slowly for the gateway's buffer) has
    the winner's call cancelled by the gateway: what the miner had sent so far is no verdict on it. An answer
    the miner itself broke still counts (within the bound)."""
    database = Database(tmp_path / "v.sqlite")
    queue = ScoringQueue(database, max_items=100)
    book = ScoreBook(database, alpha=0.1, task_weights={"InferenceTask": 1.0})
    evidence = OrganicEvidence(database, bound=0.1, alpha=0.5, per_key_cap=20, per_miner_cap=50, window=60)
    scorer = Scorer(database, queue, book, rules=RULES, organic=evidence, advertises=lambda uid, task, model: True)
    cut = [item("InferenceTask", [answer(1, "The first", status="cancelled")], request_id=f"cut-{i}")
           for i in range(20)]
    for cut_item in cut:
        cut_item.key_id = key_id("sk-impatient")
    asyncio.run(queue.put(cut))
    scorer.score_batch()
    assert evidence.factor(1) == 1.0
    synthetic = synthetic_round("InferenceTask", {2: "The first"})
    assert reward_item(synthetic, RULES)[2] < 0  # cut short by the miner itself: caught
    synthetic.responses[0].status = "cancelled"
    assert reward_item(synthetic, RULES) == {}  # stopped by the validator (shutting down): no verdict
    broken = item("InferenceTask", [answer(1, "The first", status="error")], request_id="broken")
    broken.key_id = key_id("sk-impatient")
    asyncio.run(queue.put([broken]))
    scorer.score_batch()
    assert 0.9 <= evidence.factor(1) < 1.0


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
    scorer = Scorer(database, queue, book, rules=RULES)
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
    book = ScoreBook(database, alpha=0.1, task_weights={"InferenceTask": 0.5, "WebQuestionAnsweringTask": 0.5})
    for task in ("InferenceTask", "WebQuestionAnsweringTask"):
        book.apply({uid: (HOTKEYS[uid], 0.9) for uid in (1, 3)}, task)
    before = float(book.scores[3])
    task = "WebQuestionAnsweringTask"
    copied = synthetic_round(task, {1: honest(task, 1, QUESTION), 3: honest(task, 1, QUESTION)}, QUESTION)
    asyncio.run(queue.put([copied]))
    Scorer(database, queue, book, rules=RULES).score_batch()
    assert before > 0 and book.scores[3] == -2.0  # every task restarts: not an average a few good rounds wash out
    assert book.scores[1] > before  # the miner that was copied is rewarded as usual


class Clock:
    """The score book's clock, moved by the test."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


MIX = {"InferenceTask": 0.5, "WebRetrievalTask": 0.5}


def test_a_cheat_caught_at_some_answers_is_paid_nothing_while_it_keeps_cheating(tmp_path):
    """The attack the probation is for: honest on one task, caught at its trick on the other now and then.
    Restarting at the penalty alone lets its honest answers lift it above zero between catches."""
    clock = Clock()
    database = Database(tmp_path / "v.sqlite")
    book = ScoreBook(database, alpha=0.1, task_weights=MIX, probation_seconds=3600, clock=clock)
    without = ScoreBook(Database(tmp_path / "w.sqlite"), alpha=0.1, task_weights=MIX, clock=clock)
    peak = {"probation": -9.0, "none": -9.0}
    for catch in range(5):  # caught every 30 minutes, 60 honest answers in between
        for scores in (book, without):
            scores.restart({1: "hotkey-1"}, -2.0)
        for _ in range(60):
            clock.now += 30
            for scores in (book, without):
                scores.apply({1: ("hotkey-1", 1.0), 2: ("hotkey-2", 0.5)}, "InferenceTask")
                scores.apply({1: ("hotkey-1", 1.0), 2: ("hotkey-2", 0.5)}, "WebRetrievalTask")
            peak["probation"] = max(peak["probation"], float(book.scores[1]))
            peak["none"] = max(peak["none"], float(without.scores[1]))
            assert 1 not in book.weights() and book.on_probation(1)
    assert peak["none"] > 0.5 and 1 in without.weights()  # without a probation it is paid between catches
    rows = {row["uid"]: row for row in book.table()}
    assert peak["probation"] <= 0.0 and rows[1]["probation_until"] == clock.now - 60 * 30 + 3600
    assert set(book.weights()) == {2}  # the honest miner takes it all


def test_a_probation_ends_survives_a_restart_and_does_not_follow_the_uid_to_a_new_owner(tmp_path):
    clock = Clock()
    path = tmp_path / "v.sqlite"
    database = Database(path)
    book = ScoreBook(database, alpha=1.0, task_weights=MIX, probation_seconds=3600, clock=clock)
    changed = book.apply({1: ("hotkey-1", 1.0), 2: ("hotkey-2", 1.0)}, "InferenceTask")
    changed += book.restart({1: "hotkey-1"}, -2.0)
    clock.now += 1800
    changed += book.restart({1: "hotkey-1"}, -2.0)  # a second catch: the probation runs from the last one
    for task in MIX:
        changed += book.apply({1: ("hotkey-1", 0.8)}, task)  # honest again, at once
    with database.transaction() as db:
        book.save(db, sorted(set(changed)))
    database.close()
    assert book.scores[1] == 0.0 and book.task_scores[1].tolist() == [0.8, 0.8]

    clock.now += 3000  # 4800 s after the first catch, 3000 after the last: a restarted validator still holds it
    reloaded = ScoreBook(Database(path), alpha=1.0, task_weights=MIX, probation_seconds=3600, clock=clock)
    assert reloaded.scores[1] == 0.0 and 1 not in reloaded.weights() and reloaded.on_probation(1)
    clock.now += 601  # over: its averages count again, with nothing more saved or scored
    assert reloaded.weights() == pytest.approx({1: 0.8 / 1.3, 2: 0.5 / 1.3})
    assert reloaded.scores[1] == pytest.approx(0.8)
    assert {row["uid"]: row for row in reloaded.table()}[1]["probation_until"] is None

    later = ScoreBook(Database(path), alpha=1.0, task_weights=MIX, probation_seconds=3600, clock=clock)
    assert later.scores[1] == pytest.approx(0.8)  # the saved score was capped; composed again on load

    reloaded.restart({1: "hotkey-1"}, -2.0)
    assert reloaded.align(state_with({1: "new-owner", 2: "hotkey-2"})) == [1]
    reloaded.apply({1: ("new-owner", 0.9)}, "InferenceTask")
    assert not reloaded.on_probation(1) and reloaded.scores[1] == pytest.approx(0.45)


def test_the_caps_hold_when_many_miners_are_blended_at_once(tmp_path):
    """More than a few rewards at a time are blended as arrays: the coverage gate and the probation apply there
    too (a round of 17 miners once skipped the coverage gate)."""
    clock = Clock()
    book = ScoreBook(Database(tmp_path / "v.sqlite"), alpha=1.0, task_weights=MIX, min_coverage=1.0,
                     probation_seconds=60, clock=clock)
    everything = set(MIX)
    book.set_coverage(3, "hotkey-3", {"InferenceTask"}, everything)
    book.restart({4: "hotkey-4"}, -2.0)
    many = {uid: (f"hotkey-{uid}", 1.0) for uid in range(20)}
    for task in MIX:
        book.apply(many, task)
    assert book.scores[3] == 0.0 and book.scores[4] == 0.0 and book.scores[5] == pytest.approx(1.0)
    assert not {3, 4} & set(book.weights())


def test_only_a_catch_on_a_synthetic_item_starts_a_probation(tmp_path):
    """Organic items are never caught (the client chose the request), so no key holder can put a miner on
    probation by sending it requests it answers badly; a synthetic round's junk does."""
    database = Database(tmp_path / "validator.sqlite")
    queue = ScoringQueue(database, max_items=100)
    book = ScoreBook(database, alpha=0.1, task_weights={"InferenceTask": 1.0}, probation_seconds=3600)
    scorer = Scorer(database, queue, book, rules=RULES, advertises=lambda uid, task, model: True)
    organic = item("InferenceTask", [answer(1, "filler " * 30), answer(2, exact_text())], request_id="organic")
    organic.key_id = key_id("sk-griefer")
    asyncio.run(queue.put([organic]))
    scorer.score_batch()
    assert not book.on_probation(1) and not book.on_probation(2)
    task = "InferenceTask"
    junk = synthetic_round(task, {1: "filler " * 30, 2: honest(task, 2)})
    asyncio.run(queue.put([junk]))
    scorer.score_batch()
    assert book.on_probation(1) and not book.on_probation(2) and book.scores[1] < 0


def test_the_validator_does_not_import_the_miner():
    import subprocess
    import sys

    code = ("import sys, validator.app, validator.__main__; "
            "print(sorted(m for m in sys.modules if m == 'miner' or m.startswith('miner.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_task_is_a_string_enum():
    from shared.tasks import TASKS, Task

    assert Task.INFERENCE == "InferenceTask" and "WebRetrievalTask" in TASKS
    assert ScoringItem(request_id="x", created_at=0.0, task=Task.WEB_QUESTION_ANSWERING,
                       request=MinerChatRequest(messages=MESSAGES), responses=[answer(1, "x")]
                       ).model_dump_json().count('"WebQuestionAnsweringTask"') == 1

"""Answers from real models, scored under a reference model over real HTTP.

``tiny_model`` is a small language model of our own with real
log-probabilities (a softmax over hashed logits), served the way vLLM serves
one: answers sampled with a seed, and ``prompt_logprobs`` for a conversation
that ends with the miner's answer. An honest miner's answer is sampled from
the same model as the reference; cheats send another model's words, a stub,
too much, another prompt's answer, or name a model the reference lacks.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
import tiny_model
from conftest_miner_helpers import aiohttp_thread

from localnet.launcher import free_port
from shared.schemas import MinerChatRequest, MinerResponse, SamplingParameters, ScoringItem
from validator.logprob_check import ReferenceModel, ReferenceUnavailable, answer_ranks, checked_positions
from validator.rewards import Rules, judge_item

PROMPT = [{"role": "user", "content": "How do validators rate miners?"}]
OTHER_PROMPT = [{"role": "user", "content": "Why does stake matter on a subnet?"}]
SECRET = b"validator secret"


@pytest.fixture(scope="module")
def model_server():
    with aiohttp_thread(tiny_model.create_app()) as url:
        yield url + "/v1"


def generate(url: str, model: str, messages=PROMPT, seed: int = 1, temperature: float = 0.7,
             max_tokens: int = 64) -> str:
    body = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                       "seed": seed}).encode()
    request = urllib.request.Request(url + "/chat/completions", method="POST", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["choices"][0]["message"]["content"]


def reference(url: str, **options) -> ReferenceModel:
    return ReferenceModel(url, models={"real-model"}, top_k=options.pop("top_k", 5), secret=SECRET, **options)


def test_the_model_server_reports_a_real_distribution():
    logprobs = tiny_model.distribution("real-model", "q", [" stake"])
    assert sum(2.718281828459045 ** lp for lp in logprobs) == pytest.approx(1.0)


def test_checked_positions_follow_the_secret_not_the_answer():
    one = checked_positions(40, 0.25, b"secret-a", "item-1/3")
    assert one == checked_positions(40, 0.25, b"secret-a", "item-1/3") and len(one) == 10
    assert one != checked_positions(40, 0.25, b"secret-b", "item-1/3")  # a miner without the secret cannot know
    assert one != checked_positions(40, 0.25, b"secret-a", "item-2/3")  # nor reuse what it learnt last time
    assert checked_positions(7, 1.0, b"s", "x") == list(range(7))


def test_answer_tokens_are_found_at_the_end_of_the_prompt(model_server):
    answer = "stake weights miners"
    entries = tiny_model.prompt_logprobs("real-model", [*PROMPT, {"role": "assistant", "content": answer}], 3)
    ranks = answer_ranks(entries, answer)
    assert len(ranks) == 3 and all(r >= 1 for r in ranks)


def test_the_reference_agrees_with_its_own_model_and_not_with_another(model_server):
    check = reference(model_server)
    honest = [generate(model_server, "real-model", seed=s) for s in range(5)]
    cheap = [generate(model_server, "cheap-model", seed=s) for s in range(5)]
    score = lambda text, i: check.quality(PROMPT, "real-model", text, max_new_tokens=64, salt=f"r/{i}")  # noqa: E731
    honest_scores = [score(t, i) for i, t in enumerate(honest)]
    cheap_scores = [score(t, i) for i, t in enumerate(cheap)]
    assert min(honest_scores) > 0.55, honest_scores
    assert sum(cheap_scores) < 0.5 * sum(honest_scores), cheap_scores  # chance agreement only: top 5 of 50 words


def test_truncation_too_long_and_unreadable_answers(model_server):
    check = reference(model_server, share=1.0)
    full = generate(model_server, "real-model", temperature=0.0)
    stub = "".join(tiny_model.tokenize(full)[:2])
    words = len(tiny_model.tokenize(full))
    score = lambda text, limit=64: check.quality(PROMPT, "real-model", text, max_new_tokens=limit, salt="s")  # noqa
    assert score(full) == pytest.approx(1.0)
    assert score(stub) == pytest.approx(2 / words)  # cut short: in proportion to the reference's own length
    assert score(full, limit=words - 1) == 0.0  # more tokens than max_new_tokens allowed
    assert score(" stake" * (tiny_model.CONTEXT + 10)) == 0.0  # longer than the reference's context: 400 → 0
    assert check.quality(PROMPT, "mystery-model", full, max_new_tokens=64, salt="s") == 0.0  # not served here
    unknown = ReferenceModel(model_server, models={"gone-model"}, secret=SECRET)
    assert unknown.quality(PROMPT, "gone-model", full, max_new_tokens=64, salt="s") == 0.0  # the server says 404


def test_another_prompts_answer_does_not_pass(model_server):
    check = reference(model_server)
    theirs = generate(model_server, "real-model", messages=OTHER_PROMPT, seed=3)
    ours = generate(model_server, "real-model", messages=PROMPT, seed=3)
    copied = check.quality(PROMPT, "real-model", theirs, max_new_tokens=64, salt="c")
    assert copied < 0.5 * check.quality(PROMPT, "real-model", ours, max_new_tokens=64, salt="c")


def synthetic_item(answers: dict[int, tuple[str, str]], model: str = "real-model") -> ScoringItem:
    requests = {uid: MinerChatRequest(messages=PROMPT, model=model, task="InferenceTask", seed=uid,
                                      sampling_parameters=SamplingParameters(max_new_tokens=64)) for uid in answers}
    responses = [MinerResponse(uid=uid, hotkey=f"hk{uid}", status=status, chunks=[text] if text else [],
                               timings=[0.2], model=model) for uid, (text, status) in answers.items()]
    return ScoringItem(request_id="r", source="synthetic", created_at=time.time(), task="InferenceTask",
                       request=requests[min(answers)], responses=responses, requests_by_uid=requests)


def test_rewards_from_the_reference(model_server):
    check = reference(model_server)
    honest, cheap = generate(model_server, "real-model", seed=1), generate(model_server, "cheap-model", seed=1)
    rewards = judge_item(synthetic_item({1: (honest, "ok"), 2: (honest, "ok"), 3: (cheap, "ok"), 4: ("", "error")}),
                         Rules(), reference=check).rewards
    assert rewards[1] == rewards[2] > 0.6  # the same model may well give the same words
    assert rewards[3] < 0.5 * rewards[1]
    assert rewards[4] == 0.0


def test_no_verdict_only_when_the_reference_itself_fails():
    down = ReferenceModel(f"http://127.0.0.1:{free_port()}/v1", models={"real-model"}, timeout=1.0)
    with pytest.raises(ReferenceUnavailable):
        down.ranks(PROMPT, "real-model", "stake weights")
    assert judge_item(synthetic_item({1: ("stake weights", "ok")}), Rules(), reference=down).rewards == {}
    elsewhere = ReferenceModel(f"http://127.0.0.1:{free_port()}/v1", models={"other-model"})
    # a model the reference does not serve is not the validator's failure: the answer earns 0
    assert judge_item(synthetic_item({1: ("stake weights", "ok")}), Rules(), reference=elsewhere).rewards == {1: 0.0}

"""Reward rules: what one item (a request and every miner's answer) earns each uid.

    rules = Rules(penalty=2.0)
    judgement = judge_item(item, rules, answers=BuiltinAnswers(), web=judge, reference=reference)
    judgement.rewards     # {uid: reward}: quality × speed, in [0, 1], or -penalty when caught
    judgement.caught      # {uid: why}: proof of cheating (the score book restarts such a miner)

The rules (docs/incentive.md has the threat model behind each):

- **Answering, not proximity.** Inference *and* question answering are judged
  against the validator's own answer to the very request the miner got
  (``ScoringItem.request_for``): builtin models are re-derived exactly
  (``validator.exact_check``: words agreeing at the same position, so a cut
  answer loses in proportion and the source passage agrees on nothing); real
  models are scored token by token under the reference model
  (``validator.logprob_check``). Web retrieval reads the pages
  (``validator.web_retrieval_reward``).
- **Every asked item counts.** A failed, empty or timed-out answer, an answer
  in a model nobody here can judge, or one the reference cannot read earns 0.
  "No verdict" (absent from ``rewards``) is kept for the validator's own
  failures (reference down, no page fetcher) and for organic tasks it has no
  judge for.
- **Caught** (synthetic items only, where the validator chose the request):
  an answer in another model than the one asked (relabel); a builtin answer
  that agrees with its own request on less than ``junk_below`` (filler,
  passage dumps, stubs) — named a copy when it follows another miner's seed
  (``copy_similarity``, paraphrases included); a builtin answer that is its
  own answer stopped early (truncation: the generator never stops early, and a
  broken stream is an error, not an answer); the same page twice or a page off
  the allow-list in web retrieval. Each earns ``-penalty``. Every miner of
  a synthetic round has its own seed, so only the copier's answer fails its
  own request: nobody can be framed, whoever answered first.
- **Speed.** ``quality × speed_factor``: ``scale / (scale + seconds)``, a
  hyperbola that halves at ``scale`` seconds and never reaches 0 (a slow right
  answer beats a fast wrong one). With the default 5 s, 0.05 s keeps 99% and
  1.5 s keeps 77%: 22% less at equal quality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from shared.schemas import MinerChatRequest, MinerResponse, ScoringItem
from shared.tasks import Task

from .exact_check import BuiltinAnswers, agreement, cut_short, is_builtin, similarity
from .logprob_check import ReferenceModel, ReferenceUnavailable
from .web_retrieval_reward import WebJudge

ANSWER_TASKS = (Task.INFERENCE, Task.WEB_QUESTION_ANSWERING)


@dataclass(frozen=True)
class Rules:
    penalty: float = 2.0  # what a caught answer earns (and where the caught miner's scores restart)
    timeout: float = 10.0  # seconds a missing timing counts as
    speed_scale: float = 7.5  # seconds at which the speed factor halves
    junk_below: float = 0.2  # builtin answers agreeing less than this with their own request are caught
    copy_similarity: float = 0.6  # ... and named copies when this similar to another miner's expected answer


@dataclass
class Judgement:
    rewards: dict[int, float] = field(default_factory=dict)
    caught: dict[int, str] = field(default_factory=dict)


def speed_factor(response: MinerResponse, rules: Rules) -> float:
    """``scale / (scale + seconds)``, seconds from the request to the last chunk (a missing timing: the timeout)."""
    seconds = response.timings[-1] if response.timings else rules.timeout
    return rules.speed_scale / (rules.speed_scale + max(0.0, seconds))


def answer_model(request: MinerChatRequest, response: MinerResponse) -> str:
    """The model judged: the one asked; for an organic request that named none, the one the miner says it used."""
    return request.model or response.model or ""


def judge_answer(item: ScoringItem, response: MinerResponse, rules: Rules, answers: BuiltinAnswers,
                 reference: Optional[ReferenceModel]) -> tuple[Optional[float], Optional[str]]:
    """(quality in [0, 1] or None for no verdict, why it is caught or None) for one chat answer."""
    request = item.request_for(response.uid)
    text = "".join(response.chunks)
    synthetic = item.source == "synthetic"
    if response.status == "cancelled":
        # Stopped by the gateway, not the miner: its client left or fell too far behind (or a validator shut
        # down). Scoring what was cut off would let any client sink the miner that answered it, one stream at a
        # time: no verdict.
        return None, None
    if response.status != "ok" or not text.strip():
        return 0.0, None
    model = answer_model(request, response)
    if synthetic and response.model and response.model != model:
        return 0.0, f"answered in {response.model!r}, asked for {model!r}"
    if item.task not in ANSWER_TASKS:
        return (0.0 if synthetic else None), None  # no judge for this task here
    if is_builtin(model):
        expected = answers.text(request, model)
        quality = agreement(text, expected)
        if synthetic and quality < rules.junk_below:
            return 0.0, copied_from(item, response.uid, text, rules, answers) or "not an answer to its request"
        if synthetic and cut_short(text, expected):
            return 0.0, f"cut short: {len(text.split())} of {len(expected.split())} words"
        return quality, None
    if reference is not None and reference.serves(model):
        messages = [m.model_dump() for m in request.messages]
        try:
            return reference.quality(messages, model, text, max_new_tokens=request.sampling_parameters.max_new_tokens,
                                     salt=f"{item.request_id}/{response.uid}"), None
        except ReferenceUnavailable:
            return None, None  # the validator's own failure: no verdict rather than a wrong one
    return 0.0, None  # a model nobody here can judge


def copied_from(item: ScoringItem, uid: int, text: str, rules: Rules, answers: BuiltinAnswers) -> Optional[str]:
    """Why this answer is a copy, when it follows another miner's request of the round (paraphrased or not)."""
    if not item.requests_by_uid:
        return None
    for other, request in item.requests_by_uid.items():
        if other == uid or not request.model:
            continue
        if similarity(text, answers.text(request, request.model)) >= rules.copy_similarity:
            return f"copied the answer to uid {other}'s request"
    return None


def judge_item(item: ScoringItem, rules: Rules, *, answers: Optional[BuiltinAnswers] = None,
               web: Optional[WebJudge] = None, reference: Optional[ReferenceModel] = None) -> Judgement:
    """Every miner's reward for one item (see the module docstring); organic items are never caught."""
    answers = answers if answers is not None else BuiltinAnswers()
    synthetic = item.source == "synthetic"
    judgement = Judgement()
    by_uid = {r.uid: r for r in item.responses}
    if item.task == Task.WEB_RETRIEVAL:
        if web is None:
            return judgement
        verdicts = {uid: (v.quality, v.caught) for uid, v in web.judge(item).items()}
    else:
        verdicts = {r.uid: judge_answer(item, r, rules, answers, reference) for r in item.responses}
    for uid, (quality, caught) in verdicts.items():
        if caught and synthetic:
            judgement.caught[uid] = caught
            judgement.rewards[uid] = -rules.penalty
        elif quality is not None:
            judgement.rewards[uid] = 0.0 if caught or quality <= 0 else quality * speed_factor(by_uid[uid], rules)
    return judgement


def reward_item(item: ScoringItem, rules: Optional[Rules] = None, **kwargs) -> dict[int, float]:
    """``judge_item(...).rewards``: {uid: reward}; uids without a verdict are absent."""
    return judge_item(item, rules or Rules(), **kwargs).rewards

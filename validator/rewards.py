"""Reward models: what one item (a request and every miner's answer) earns each uid.

    rewards = reward_item(item, timeout=10.0)   # {uid: reward}; uids without a verdict are absent

- ``InferenceTask`` with a builtin model: the validator re-derives the exact
  answer (the builtin generator is deterministic). Agreement is 1 for the exact
  text and 0 for anything else, times a speed factor.
- ``InferenceTask`` with a model the configured reference serves: the share of
  sampled positions where the answer continues with one of the reference
  model's top next tokens (``validator.logprob_check``), times the speed factor.
- ``WebQuestionAnsweringTask``: relevance of the answer to the corpus passage the
  question is about (``shared.corpus``), times the speed factor.
- ``WebRetrievalTask`` (when the scorer has a page fetcher): the pages are
  fetched and each result checked against its page and the query
  (``validator.web_retrieval_reward``), times the speed factor.
- Empty, malformed, failed or timed-out answers earn 0.
- Copy-cats: where honest answers differ (every task but inference, where the
  same model, prompt and seed may well give the same words, and web retrieval,
  where honest miners return the same pages), an
  answer identical to one that arrived at least ``copy_margin`` seconds
  earlier in the same item earns ``-copycat_penalty``; copying must cost more
  than not answering. (The scorer goes further: a caught copy-cat's moving
  average restarts there.) Identical answers closer together than the margin
  get no verdict at all: which came first is then timing noise (a busy
  validator reads both in the same loop turn), and punishing the wrong one
  would cost an honest miner its whole average.

Other tasks, and models that neither the builtin generator nor the reference
serves, get no verdict rather than a guess.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, NamedTuple, Optional

from miner.backends.builtin import QA_TASK, canonical_key, generate_completion
from shared.corpus import Corpus, relevance
from shared.schemas import WEB_RETRIEVAL_TASK, MinerChatRequest, MinerResponse, ScoringItem
from shared.web_check import PageFetcher

from .logprob_check import ReferenceModel, ReferenceUnavailable
from .web_retrieval_reward import web_quality

INFERENCE_TASK = "InferenceTask"
BUILTIN_MODEL_PREFIX = "builtin"


def is_exact(item: ScoringItem, response: MinerResponse) -> bool:
    model = response.model or item.request.model or ""
    return item.task == INFERENCE_TASK and model.startswith(BUILTIN_MODEL_PREFIX)


def speed_factor(response: MinerResponse, timeout: float) -> float:
    """1 for an instant answer, 0.5 for one that took the whole timeout: quality dominates speed."""
    seconds = response.timings[-1] if response.timings else timeout
    return 0.5 + 0.5 * max(0.0, 1.0 - seconds / timeout)


def expected_text(item: ScoringItem, model: str) -> str:
    messages = [m.model_dump() for m in item.request.messages]
    tokens, _ = generate_completion(messages, model, item.request.seed, item.request.sampling_parameters.model_dump())
    return "".join(tokens)


class BuiltinAnswers:
    """The builtin generator's answers, remembered for the last ``size`` distinct requests.

    Organic traffic repeats itself (the same prompt, model, seed and sampling
    from a client that pins its seed), and re-deriving the answer is most of
    what scoring such an item costs. The key holds exactly what the generator
    reads (``canonical_key``'s inputs), so two requests share an answer only
    when the generator could not tell them apart.
    """

    def __init__(self, size: int = 4096):
        self.size = size
        self.texts: OrderedDict[Hashable, str] = OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def key(request: MinerChatRequest, model: str) -> Hashable:
        sampling = request.sampling_parameters
        messages = tuple((str(m.role), m.content) for m in request.messages)
        if not all(isinstance(content, str) for _, content in messages):  # lists of parts: hash them canonically
            return canonical_key([m.model_dump() for m in request.messages], model, request.seed,
                                 sampling.model_dump())
        return (model, request.seed, float(sampling.temperature), float(sampling.top_p), int(sampling.top_k),
                int(sampling.max_new_tokens), messages)

    def text(self, item: ScoringItem, model: str) -> str:
        key = self.key(item.request, model)
        text = self.texts.get(key)
        if text is not None:
            self.hits += 1
            self.texts.move_to_end(key)
            return text
        self.misses += 1
        text = self.texts[key] = expected_text(item, model)
        if len(self.texts) > self.size:
            self.texts.popitem(last=False)
        return text


def question_of(item: ScoringItem) -> str:
    for message in reversed(item.request.messages):
        if message.role == "user" and isinstance(message.content, str):
            return message.content
    return ""


def quality(item: ScoringItem, response: MinerResponse, corpus: Corpus, cache: dict,
            reference: Optional[ReferenceModel] = None, answers: Optional[BuiltinAnswers] = None) -> Optional[float]:
    """How good the answer is, in [0, 1]; None when this validator cannot judge it."""
    text = "".join(response.chunks)
    if response.status != "ok" or not text.strip():
        return 0.0
    if is_exact(item, response):
        model = response.model or item.request.model
        if model not in cache:
            cache[model] = answers.text(item, model) if answers is not None else expected_text(item, model)
        return 1.0 if text == cache[model] else 0.0
    model = response.model or item.request.model or ""
    if item.task == INFERENCE_TASK and reference is not None and reference.serves(model):
        try:
            return reference.agreement([m.model_dump() for m in item.request.messages], model, text)
        except ReferenceUnavailable:
            return None  # no verdict rather than a wrong one
    if item.task == QA_TASK:
        if "reference" not in cache:
            cache["reference"] = corpus.best_passage(question_of(item)).text
        return relevance(text, cache["reference"])
    return None


COPY_MARGIN_SECONDS = 0.05


class CopyVerdict(NamedTuple):
    copied: set[int]  # repeated an answer that finished at least the margin earlier
    unclear: set[int]  # identical to another answer within the margin: no verdict either way


def find_copies(item: ScoringItem, margin: float = COPY_MARGIN_SECONDS) -> CopyVerdict:
    """Which uids repeated, word for word, an answer that finished earlier in the same item."""
    verdict = CopyVerdict(set(), set())
    if item.task in (INFERENCE_TASK, WEB_RETRIEVAL_TASK):
        return verdict  # identical honest answers are expected there
    first_seen: dict[str, tuple[int, float]] = {}
    answered = [r for r in item.responses if r.status == "ok" and r.chunks]
    for response in sorted(answered, key=finished_at):
        text = " ".join("".join(response.chunks).split())
        if text not in first_seen:
            first_seen[text] = (response.uid, finished_at(response))
            continue
        first_uid, first_at = first_seen[text]
        if finished_at(response) - first_at >= margin:
            verdict.copied.add(response.uid)
        else:
            verdict.unclear.update((response.uid, first_uid))
    verdict.unclear.difference_update(verdict.copied)  # a later, clear copy of a near-tie is still a copy
    return verdict


def finished_at(response: MinerResponse) -> float:
    return response.timings[-1] if response.timings else float("inf")


def reward_item(item: ScoringItem, *, timeout: float, copycat_penalty: float,
                corpus: Optional[Corpus] = None, web: Optional[PageFetcher] = None,
                reference: Optional[ReferenceModel] = None, answers: Optional[BuiltinAnswers] = None,
                copies: Optional[CopyVerdict] = None) -> dict[int, float]:
    """{uid: reward}. Web retrieval needs ``web`` (pages are fetched); without it, no verdict.

    ``answers`` remembers builtin answers across items (the scorer keeps one); without it each is re-derived.
    ``copies`` is ``find_copies(item)`` when the caller already has it.
    """
    if item.task == WEB_RETRIEVAL_TASK:
        if web is None:
            return {}
        by_uid = {r.uid: r for r in item.responses}
        return {uid: q * speed_factor(by_uid[uid], timeout) if q > 0 else 0.0
                for uid, q in web_quality(item, web).items()}
    corpus = corpus or Corpus.load()
    cache: dict = {}
    copies = copies if copies is not None else find_copies(item)
    rewards = {}
    for response in item.responses:
        if response.uid in copies.copied:
            rewards[response.uid] = -copycat_penalty
            continue
        if response.uid in copies.unclear:
            continue
        verdict = quality(item, response, corpus, cache, reference, answers)
        if verdict is not None:
            rewards[response.uid] = verdict * speed_factor(response, timeout) if verdict > 0 else 0.0
    return rewards

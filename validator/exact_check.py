"""Judge answers in a builtin model: re-derive the exact answer and count the words that agree.

The builtin generator (``shared.builtin_generator``) is deterministic, so the
validator knows word for word what an honest miner sends for any request —
inference and question answering alike::

    answers = BuiltinAnswers()
    expected = answers.text(request, "builtin-small")     # what an honest miner answers
    agreement(answer, expected)                            # 0..1

``agreement`` is the share of the expected words that the answer has *at the
same position*, over the longer of the two: an exact answer scores 1, an answer
cut to half its length ½, one with a third of its words swapped about ⅔, and
anything padded past the expected end loses the same way. Text that is not
this request's answer (the source passage, another miner's seed, filler)
agrees on almost nothing. ``cut_short`` tells an answer stopped early on
purpose, and ``similarity`` a paraphrase of some other text (words inserted,
dropped or changed) from an unrelated one.
"""

from __future__ import annotations

from collections import OrderedDict
from difflib import SequenceMatcher
from typing import Hashable

from shared.builtin_generator import QA_TASK, answer_question, canonical_key, generate_completion
from shared.schemas import MinerChatRequest

BUILTIN_MODEL_PREFIX = "builtin"


def is_builtin(model: str) -> bool:
    return model.startswith(BUILTIN_MODEL_PREFIX)


def expected_text(request: MinerChatRequest, model: str) -> str:
    """What an honest builtin miner answers to ``request`` in ``model`` (the miner's ``BuiltinBackend``)."""
    messages = [m.model_dump() for m in request.messages]
    sampling = request.sampling_parameters.model_dump()
    if request.task == QA_TASK:
        return "".join(answer_question(messages, model, request.seed, int(sampling["max_new_tokens"])))
    tokens, _ = generate_completion(messages, model, request.seed, sampling)
    return "".join(tokens)


def agreement(answer: str, expected: str) -> float:
    """Words equal at the same position, over the longer text's word count (0 when both are empty)."""
    got, want = answer.split(), expected.split()
    longer = max(len(got), len(want))
    if not longer:
        return 0.0
    return sum(1 for a, b in zip(got, want) if a == b) / longer


def cut_short(answer: str, expected: str) -> bool:
    """Whether the answer is the expected one stopped early: every word right, the end missing.

    The builtin generator never stops before its own end, and a stream that
    breaks is an error, not an answer; so a clean answer that is a strict
    prefix of the expected one was cut on purpose, to save the work.
    """
    got, want = answer.split(), expected.split()
    return 0 < len(got) < len(want) and want[: len(got)] == got


def similarity(answer: str, other: str) -> float:
    """How much of two texts' word sequences match, in order (difflib's ratio): 1 for a copy, ~0.9 for a paraphrase."""
    return SequenceMatcher(None, answer.split(), other.split(), autojunk=False).ratio()


class BuiltinAnswers:
    """The builtin generator's answers, remembered for the last ``size`` distinct requests.

    Organic traffic repeats itself (the same prompt, model, seed and sampling
    from a client that pins its seed), and re-deriving the answer is most of
    what scoring such an item costs. The key holds exactly what the generator
    reads, so two requests share an answer only when the generator could not
    tell them apart.
    """

    def __init__(self, size: int = 4096):
        self.size = size
        self.texts: OrderedDict[Hashable, str] = OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def key(request: MinerChatRequest, model: str) -> Hashable:
        sampling = request.sampling_parameters
        messages = tuple((str(m.role), m.content) for m in request.messages)
        qa = request.task == QA_TASK
        if not all(isinstance(content, str) for _, content in messages):  # lists of parts: hash them canonically
            return qa, canonical_key([m.model_dump() for m in request.messages], model, request.seed,
                                     sampling.model_dump())
        return (qa, model, request.seed, float(sampling.temperature), float(sampling.top_p), int(sampling.top_k),
                int(sampling.max_new_tokens), messages)

    def text(self, request: MinerChatRequest, model: str) -> str:
        key = self.key(request, model)
        text = self.texts.get(key)
        if text is not None:
            self.hits += 1
            self.texts.move_to_end(key)
            return text
        self.misses += 1
        text = self.texts[key] = expected_text(request, model)
        if len(self.texts) > self.size:
            self.texts.popitem(last=False)
        return text

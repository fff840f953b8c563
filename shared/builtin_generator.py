"""A deterministic text generator: the same request always gives the same words.

It is not a language model and knows nothing; it exists so that the demo, the
tests and the validator's exact-output checks run anywhere, without weights or
a network. The miner's builtin backend (``miner.backends.builtin``) serves it,
and the validator re-derives what a good miner must have answered::

    from shared.builtin_generator import generate_tokens
    expected = "".join(generate_tokens(messages, model, seed, sampling))

The output depends only on (model, messages' role and content, seed,
temperature, top_p, top_k, max_new_tokens). Those are hashed with sha256 over a
canonical JSON (never Python's ``hash()``, which is salted per process), and the
digest drives every choice. The answer restates a few words of the last user
message, then continues with words from a small vocabulary: 20–60 tokens,
capped by ``max_new_tokens``. A token is a word plus its following space, so
``"".join(tokens)`` is the text and ``count_tokens(text) == len(tokens)``.

For ``WebQuestionAnsweringTask`` it answers from the corpus shipped in
``shared.corpus`` (the stand-in for the web): the passage that best matches the
question, two or three of its sentences in an order, with an opening and a
closing remark, that depend on the model and the seed. The validator gives every
miner of a synthetic round its own seed, so honest answers differ, and an
answer that follows another miner's seed is proof of copying.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from typing import Any, Mapping

from .tasks import Task

MIN_TOKENS = 20
MAX_TOKENS = 60
OPENERS = ("About", "Regarding", "On", "Concerning", "As for")
VOCABULARY = (
    "the", "a", "this", "that", "it", "is", "are", "can", "will", "often", "usually", "also", "and", "but",
    "because", "so", "when", "which", "with", "for", "of", "in", "on", "by", "to", "from", "more", "most",
    "answer", "question", "result", "approach", "method", "system", "value", "process", "data", "model",
    "example", "case", "reason", "step", "detail", "part", "way", "idea", "point", "change", "effect",
    "depends", "means", "shows", "helps", "needs", "gives", "makes", "uses", "follows", "suggests",
    "explains", "includes", "requires", "improves", "reduces", "supports", "describes", "compares",
    "simple", "clear", "common", "useful", "important", "different", "similar", "main", "first", "next",
    "small", "large", "careful", "practical", "general", "specific", "likely", "reliable", "short",
    "time", "cost", "quality", "context", "input", "output", "source", "structure", "pattern", "limit",
    "rule", "choice", "balance", "measure", "test", "check", "plan", "goal", "problem", "solution",
)
_WORD = re.compile(r"[A-Za-z0-9']+")
_EIGHT_WORDS = struct.Struct(">8I")


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or OpenAI's list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return "" if content is None else str(content)


def count_tokens(text: str) -> int:
    """Whitespace-separated words: the unit of ``usage`` for the builtin backend."""
    return len(text.split())


def canonical_key(messages: list[Mapping[str, Any]], model: str, seed: int, sampling: Mapping[str, Any]) -> bytes:
    """sha256 of everything the output may depend on, with numbers normalised (1 == 1.0)."""
    payload = {
        "model": model or "",
        "messages": [{"role": str(m.get("role", "")), "content": m.get("content", "")} for m in messages],
        "seed": int(seed),
        "temperature": float(sampling.get("temperature", 0.7)),
        "top_p": float(sampling.get("top_p", 0.95)),
        "top_k": int(sampling.get("top_k", 50)),
        "max_new_tokens": int(sampling.get("max_new_tokens", 1024)),
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).digest()


class DigestNumbers:
    """Integers drawn from sha256(key || counter): the same on every machine and Python.

    Each digest is eight big-endian 32-bit words, used in order; ``below(n)`` is
    the next word modulo ``n``.
    """

    def __init__(self, key: bytes):
        self.key = key
        self.counter = 0
        self.words: tuple[int, ...] = ()
        self.used = 0

    def below(self, n: int) -> int:
        if self.used == len(self.words):
            self.words = _EIGHT_WORDS.unpack(hashlib.sha256(self.key + self.counter.to_bytes(8, "big")).digest())
            self.counter += 1
            self.used = 0
        self.used += 1
        return self.words[self.used - 1] % n


def vocabulary_size(sampling: Mapping[str, Any]) -> int:
    """How many vocabulary words may appear: fewer for small top_k, top_p or temperature."""
    size = len(VOCABULARY)
    top_k = int(sampling.get("top_k", 50))
    if top_k > 0:
        size = min(size, top_k)
    size = round(size * float(sampling.get("top_p", 0.95)))
    if float(sampling.get("temperature", 0.7)) == 0.0:
        size //= 4
    return max(4, size)


def last_user_words(messages: list[Mapping[str, Any]]) -> list[str]:
    for message in reversed(messages):
        if message.get("role") == "user":
            return [word.lower() for word in _WORD.findall(message_text(message.get("content", "")))]
    return []


def generate_completion(
    messages: list[Mapping[str, Any]], model: str, seed: int, sampling: Mapping[str, Any]
) -> tuple[list[str], str]:
    """The tokens and the finish reason (``"length"`` when ``max_new_tokens`` cut it short)."""
    numbers = DigestNumbers(canonical_key(messages, model, seed, sampling))
    natural = MIN_TOKENS + numbers.below(MAX_TOKENS - MIN_TOKENS + 1)
    limit = int(sampling.get("max_new_tokens", 1024))
    pool = vocabulary_size(sampling)

    words = OPENERS[numbers.below(len(OPENERS))].split()
    restated = last_user_words(messages)[: 3 + numbers.below(3)]
    if restated:
        words += restated
        words[-1] += ","
    sentence_left = 3 + numbers.below(5)  # the opener's sentence goes on before the first full stop
    # Words past the cut would be drawn and thrown away: stop drawing there (a negative limit, which the
    # schema forbids, keeps its old meaning of dropping words from the end).
    wanted = min(natural, limit) if limit >= 0 else natural
    below = numbers.below
    for count in range(len(words) + 1, wanted + 1):  # count: how many words there are with this one
        word = VOCABULARY[below(pool)]
        if sentence_left == 0:
            sentence_left = 5 + below(7)
            word = word.capitalize()
        sentence_left -= 1
        if sentence_left == 0 or count == natural:
            word += "."
            sentence_left = 0
        words.append(word)

    finish_reason = "length" if natural > limit else "stop"
    words = words[:limit]
    return [word + " " for word in words[:-1]] + words[-1:], finish_reason


def generate_tokens(messages: list[dict], model: str, seed: int, sampling: dict) -> list[str]:
    """The builtin answer as tokens; ``"".join(...)`` is the text a good miner sends."""
    return generate_completion(messages, model, seed, sampling)[0]


def prompt_tokens(messages: list[Mapping[str, Any]]) -> int:
    return sum(count_tokens(message_text(m.get("content", ""))) for m in messages)


QA_TASK = Task.WEB_QUESTION_ANSWERING.value
QA_OPENERS = ("In short:", "Briefly,", "Here is what I found:", "From what I know:", "To answer that:")


def answer_question(messages: list[Mapping[str, Any]], model: str, seed: int, max_new_tokens: int) -> list[str]:
    """A corpus-grounded answer to the last user message: which sentences, in which order, follow the seed.

    It depends only on (model, seed, question, ``max_new_tokens``), so the validator re-derives it exactly;
    honest miners differ because every miner of a synthetic round gets its own seed.
    """
    from shared.corpus import Corpus  # numpy: imported only by processes that answer or judge questions

    question = " ".join(last_user_words(messages)) or "question"
    passage = Corpus.load().best_passage(question)
    numbers = DigestNumbers(hashlib.sha256(f"{model}\n{seed}\n{question}".encode()).digest())
    sentences = passage.sentences
    order = sorted(range(len(sentences)), key=lambda _: numbers.below(1000))[: 2 + numbers.below(2)]
    remark = " ".join(VOCABULARY[numbers.below(len(VOCABULARY))] for _ in range(5)).capitalize() + "."
    text = " ".join([QA_OPENERS[numbers.below(len(QA_OPENERS))]] + [sentences[i] for i in order] + [remark])
    words = text.split()[:max_new_tokens]
    return [word + " " for word in words[:-1]] + words[-1:]

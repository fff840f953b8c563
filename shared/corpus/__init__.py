"""A small corpus of passages shipped with the repo, and the text vectors to compare against it.

It stands in for "the web" of a question-answering task, so that nothing is
downloaded at run time. The validator draws questions from it and judges an
answer by its relevance to the passage the question is about; the reference
miner's builtin backend answers from it::

    corpus = Corpus.load()
    passage = corpus.best_passage("Why do leaves look green?")
    relevance(answer, passage.text)          # cosine of hashed word vectors, 0..1

Vectors are hashed word unigrams and bigrams (numpy, no model, no download):
good enough to tell an on-topic answer from noise, which is all a reward needs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

DIMENSIONS = 4096
_WORD = re.compile(r"[a-z0-9']+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
STOPWORDS = frozenset(
    "a an the and or but of to in on at by for with from is are was were be been it its this that these those "
    "as so do does did what which who whom how why when where can could should would will may might their "
    "there then than them they he she we you i his her our your not no".split()
)


@dataclass(frozen=True)
class Passage:
    index: int
    title: str
    text: str
    questions: tuple[str, ...]

    @property
    def sentences(self) -> list[str]:
        return [s for s in _SENTENCE_END.split(self.text) if s]


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


@lru_cache(maxsize=65536)
def _bucket(feature: str) -> int:
    return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=4).digest(), "big") % DIMENSIONS


def vector(text: str) -> np.ndarray:
    """L2-normalised hashed counts of words and word pairs (sublinear term frequency)."""
    tokens = words(text)
    features = tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]
    out = np.zeros(DIMENSIONS, dtype=np.float32)
    if not features:
        return out
    np.add.at(out, np.fromiter((_bucket(f) for f in features), dtype=np.int64, count=len(features)), 1.0)
    np.log1p(out, out=out)
    norm = float(np.linalg.norm(out))
    return out / norm if norm else out


def relevance(answer: str, reference: str) -> float:
    """Cosine similarity of the two texts' vectors, in [0, 1]."""
    return float(np.clip(vector(answer) @ vector(reference), 0.0, 1.0))


class Corpus:
    def __init__(self, passages: list[Passage]):
        self.passages = passages
        self.matrix = np.stack([vector(p.title + ". " + p.text) for p in passages])

    @classmethod
    @lru_cache(maxsize=1)
    def load(cls) -> "Corpus":
        raw = json.loads((Path(__file__).parent / "passages.json").read_text())
        return cls([Passage(i, p["title"], p["text"], tuple(p["questions"])) for i, p in enumerate(raw)])

    def best_passage(self, question: str) -> Passage:
        return self.passages[int(np.argmax(self.matrix @ vector(question)))]

"""The reference miner's "search engine": the shipped corpus, served as web pages.

Each passage of ``shared/corpus/passages.json`` is a page at
``MINER_WEB_BASE_URL`` + ``shared.corpus.pages.page_path(passage)`` (the local
subnet serves them on 127.0.0.1). A query returns the best-matching pages,
each with its text as ``content`` and, as ``relevant``, the one or two
consecutive sentences of that text that match the query best — cut from the
text itself, so ``relevant`` is always part of ``content``::

    index = WebIndex("http://127.0.0.1:8093")
    index.search("Why do leaves look green?", 2)   # [{"url", "content", "relevant"}, ...]
"""

from __future__ import annotations

import re

import numpy as np

from shared.corpus import Corpus, Passage, relevance, vector
from shared.corpus.pages import page_path

_SENTENCE = re.compile(r"[^\s.!?][^.!?]*(?:[.!?]+|$)")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in _SENTENCE.finditer(text)]


def relevant_span(text: str, query: str, width: int = 2) -> str:
    """The run of up to ``width`` consecutive sentences most relevant to the query."""
    spans = sentence_spans(text)
    if not spans:
        return text
    windows = [(spans[i][0], spans[min(i + width, len(spans)) - 1][1]) for i in range(len(spans))]
    windows += spans  # a single sentence may beat any pair
    start, end = max(windows, key=lambda w: (relevance(text[w[0]:w[1]], query), -(w[1] - w[0])))
    return text[start:end]


class WebIndex:
    def __init__(self, base_url: str, corpus: Corpus | None = None):
        self.base_url = base_url.rstrip("/")
        self.corpus = corpus or Corpus.load()

    def url(self, passage: Passage) -> str:
        return self.base_url + page_path(passage)

    def search(self, query: str, n_results: int) -> list[dict[str, str]]:
        scores = self.corpus.matrix @ vector(query)
        best = np.argsort(-scores, kind="stable")[:n_results]
        passages = [self.corpus.passages[int(i)] for i in best]
        return [{"url": self.url(p), "content": p.text, "relevant": relevant_span(p.text, query)} for p in passages]

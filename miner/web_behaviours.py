"""How a demo miner's web retrieval answer goes wrong, by ``MINER_BEHAVIOUR``.

- ``good``, ``slow``, ``copycat``: the index's results as they are (``slow``
  and ``copycat`` only answer later; see ``Behaviour.web_results``).
- ``noisy``: about 30% of the words of ``content`` and ``relevant`` swapped,
  the same way in both, so ``relevant`` is still part of ``content`` but the
  content is no longer what the page says: only fetching the page tells.
- ``junk_urls``: the right text under URLs that lead nowhere: every other one
  malformed (not http), the rest well formed but naming pages that do not exist.
- ``off_page``: the right page and content, but a ``relevant`` passage taken
  from another page, so it is not part of the content.
- ``broken``: 500 (``Behaviour.web_results`` raises before this is called).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from shared.builtin_generator import VOCABULARY

if TYPE_CHECKING:
    from .web_index import WebIndex

_WORD = re.compile(r"[A-Za-z0-9']+")


def noisy_word(word: str) -> str:
    """A fixed replacement for about 30% of words (by the word's hash), so a text and its parts agree."""
    digest = hashlib.sha256(word.lower().encode()).digest()
    if digest[0] % 100 >= 30:
        return word
    replacement = VOCABULARY[digest[1] % len(VOCABULARY)]
    return replacement if replacement != word.lower() else VOCABULARY[(digest[1] + 1) % len(VOCABULARY)]


def noisy_text(text: str) -> str:
    return _WORD.sub(lambda match: noisy_word(match.group(0)), text)


def junk_url(url: str, position: int) -> str:
    if position % 2 == 0:
        return "htp:/" + url.split("://", 1)[-1]
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/pages/missing-{hashlib.sha256(url.encode()).hexdigest()[:10]}.html"


def shape_results(name: str, results: list[dict[str, str]], query: str, index: "WebIndex") -> list[dict[str, str]]:
    if name == "noisy":
        return [{**r, "content": noisy_text(r["content"]), "relevant": noisy_text(r["relevant"])} for r in results]
    if name == "junk_urls":
        return [{**r, "url": junk_url(r["url"], i)} for i, r in enumerate(results)]
    if name == "off_page":
        others = index.search(query, len(results) + 1)
        shaped = []
        for r in results:
            foreign = next(o["relevant"] for o in others if o["url"] != r["url"])
            shaped.append({**r, "relevant": foreign})
        return shaped
    return results

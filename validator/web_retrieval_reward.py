"""How good a miner's web retrieval answer is: the pages are fetched and read.

    quality = web_quality(item, PageFetcher(timeout=5, max_bytes=1_000_000))   # {uid: 0..1}

Each of the first ``n_results`` results a miner returned is worth, out of 1:

- 0 when it is malformed (see ``shared.web_check.parse_result``: string
  fields, an http(s) URL, ``relevant`` part of ``content``), repeats a URL the
  same miner already gave, names a page that cannot be fetched, or carries
  ``content`` that is not on that page;
- otherwise ½ for being true to the page, plus up to ½ for the relevance of
  ``relevant`` to the query (``shared.corpus.relevance``; full marks from
  ``RELEVANCE_FOR_FULL_MARKS``).

The miner's quality is the sum over ``n_results`` (missing results count as
0). Every distinct URL of the item is fetched once, concurrently and bounded
(``PageFetcher``); this runs in the scorer's worker thread, on a small event
loop of its own. Honest miners that search the same web return the same
pages, so there is no copy-cat rule here.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from shared.corpus import relevance
from shared.schemas import MinerResponse, ScoringItem
from shared.web_check import PageFetcher, content_on_page, parse_result, url_key

RELEVANCE_FOR_FULL_MARKS = 0.3
DEFAULT_RESULTS = 1


def returned_results(response: MinerResponse) -> list[Any]:
    """What the miner returned: the results field, or (a chat-style answer) its text as a JSON list."""
    if response.results is not None:
        return response.results
    try:
        parsed = json.loads("".join(response.chunks))
    except ValueError:
        return []
    return parsed if isinstance(parsed, list) else []


def query_of(item: ScoringItem) -> str:
    if item.search_query:
        return item.search_query
    for message in reversed(item.request.messages):
        if message.role == "user" and isinstance(message.content, str):
            return message.content
    return ""


def result_value(raw: Any, query: str, pages: dict[str, Any], seen: set[str]) -> float:
    result = parse_result(raw)
    if result is None or url_key(result.url) in seen:
        return 0.0
    seen.add(url_key(result.url))
    if not content_on_page(result.content, pages.get(result.url)):
        return 0.0
    return 0.5 + 0.5 * min(1.0, relevance(result.relevant, query) / RELEVANCE_FOR_FULL_MARKS)


def web_quality(item: ScoringItem, fetcher: PageFetcher) -> dict[int, float]:
    """Quality in [0, 1] per uid; call it off the event loop (it runs one of its own)."""
    wanted = item.n_results or DEFAULT_RESULTS
    query = query_of(item)
    answers = {r.uid: returned_results(r)[:wanted] if r.status == "ok" else [] for r in item.responses}
    urls = [parsed.url for results in answers.values() for parsed in map(parse_result, results) if parsed]
    pages = asyncio.run(fetcher.fetch_many(urls)) if urls else {}
    quality = {}
    for uid, results in answers.items():
        seen: set[str] = set()
        quality[uid] = sum(result_value(raw, query, pages, seen) for raw in results) / wanted
    return quality

"""How good a miner's web retrieval answer is: the pages are fetched and read.

    judge = WebJudge(PageFetcher(timeout=5, max_bytes=1_000_000), allowed_hosts={"127.0.0.1:8093"}, max_per_host=3)
    verdicts = judge.judge(item)          # {uid: WebVerdict(quality 0..1, caught reason or None)}

Each of the first ``n_results`` results a miner returned is worth, out of 1:

- 0 when it is malformed (see ``shared.web_check.parse_result``), names a
  page that cannot be fetched, carries ``content`` that is not on that page,
  or is beyond ``max_per_host`` results from one host;
- 1 when its page really answers the query: the validator drew the query
  from a page it knows (``shared.corpus``), and the fetched page holds that
  page's text;
- otherwise up to ½, for a true page whose ``relevant`` passage is on topic
  (``shared.corpus.relevance``; the most from ``RELEVANCE_FOR_FULL_MARKS``).

Caught, whatever the rest is worth: the same page twice in one answer (after
``shared.web_check.url_key`` normalised scheme, host case, port, query and
fragment: ``?v=1``, ``?v=2`` … is one page), and, when an allow-list of hosts
is configured (the local page server in the demo), any result on another host
— the self-hosted page that repeats the query. The miner's quality is the sum
over ``n_results`` (missing results count as 0). Every distinct URL of the
item is fetched once; this runs in the scorer's worker thread, on a small
event loop of its own. Honest miners that search the same web return the same
pages, so there is no copy rule here.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any, Iterable, NamedTuple, Optional

from shared.corpus import Corpus, Passage, relevance
from shared.schemas import MinerResponse, ScoringItem
from shared.web_check import PageFetcher, content_on_page, normalise, parse_result, url_host, url_key

RELEVANCE_FOR_FULL_MARKS = 0.3
NOT_THE_ANSWER = 0.5  # the most a true, on-topic page earns when it is not the page that answers the query
DEFAULT_RESULTS = 1


class WebVerdict(NamedTuple):
    quality: float
    caught: Optional[str] = None  # why this answer is proof of gaming the rules, if it is


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


def answering_passage(query: str, corpus: Corpus) -> Optional[Passage]:
    """The page a query was drawn from, when it is one of the corpus's own questions."""
    for passage in corpus.passages:
        if query in passage.questions:
            return passage
    return None


class WebJudge:
    def __init__(self, fetcher: PageFetcher, *, allowed_hosts: Iterable[str] = (), max_per_host: int = 0,
                 corpus: Optional[Corpus] = None):
        self.fetcher = fetcher
        self.allowed_hosts = frozenset(h.strip().lower() for h in allowed_hosts if h.strip())
        self.max_per_host = max_per_host  # 0: no cap
        self.corpus = corpus or Corpus.load()

    def host_allowed(self, url: str) -> bool:
        if not self.allowed_hosts:
            return True
        host = url_host(url)
        return host in self.allowed_hosts or host.split(":", 1)[0] in self.allowed_hosts

    def judge(self, item: ScoringItem) -> dict[int, WebVerdict]:
        """A verdict per uid; call it off the event loop (it runs one of its own to fetch pages)."""
        wanted = item.n_results or DEFAULT_RESULTS
        query = query_of(item)
        passage = answering_passage(query, self.corpus)
        answer_text = normalise(passage.text) if passage else None
        answers = {r.uid: returned_results(r)[:wanted] if r.status == "ok" else [] for r in item.responses}
        urls = [parsed.url for results in answers.values() for parsed in map(parse_result, results)
                if parsed and self.host_allowed(parsed.url)]
        pages = asyncio.run(self.fetcher.fetch_many(urls)) if urls else {}
        verdicts = {}
        for uid, results in answers.items():
            seen: set[str] = set()
            hosts: Counter[str] = Counter()
            total, caught = 0.0, None
            for raw in results:
                result = parse_result(raw)
                if result is None:
                    continue
                key = url_key(result.url)
                if key in seen:
                    caught = caught or "the same page twice under different URLs"
                    continue
                seen.add(key)
                if not self.host_allowed(result.url):
                    caught = caught or f"a page on a host off the allow-list ({url_host(result.url)})"
                    continue
                hosts[url_host(result.url)] += 1
                if self.max_per_host and hosts[url_host(result.url)] > self.max_per_host:
                    continue
                page = pages.get(result.url)
                if not content_on_page(result.content, page):
                    continue
                if answer_text is not None and answer_text in page:
                    total += 1.0
                else:
                    total += NOT_THE_ANSWER * min(1.0, relevance(result.relevant, query) / RELEVANCE_FOR_FULL_MARKS)
            verdicts[uid] = WebVerdict(total / wanted, caught)
        return verdicts

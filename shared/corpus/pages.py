"""The corpus as web pages: one HTML page per passage, at a stable path.

The local subnet serves these pages on 127.0.0.1 (``localnet.web_pages``) and
the reference miner's web index answers with their URLs, so the web retrieval
task runs against real pages that the API and the validator can fetch::

    path = page_path(passage)            # "/pages/03-weights-and-consensus.html"
    html = render_page(passage)          # title and text, HTML-escaped

The page's text (what ``shared.web_check.page_text`` extracts) is the title
followed by the passage text, so a result whose ``content`` is the passage
text matches the page.
"""

from __future__ import annotations

import html
import re

from . import Passage

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slug(title: str) -> str:
    return _NOT_SLUG.sub("-", title.lower()).strip("-") or "page"


def page_path(passage: Passage) -> str:
    """Stable across runs: the passage's index and its title."""
    return f"/pages/{passage.index:02d}-{slug(passage.title)}.html"


def render_page(passage: Passage) -> str:
    title = html.escape(passage.title)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{title}</title></head>\n<body><article><h1>{title}</h1>\n"
        f"<p>{html.escape(passage.text)}</p></article></body></html>\n"
    )


def render_index(passages: list[Passage]) -> str:
    links = "\n".join(
        f"<li><a href=\"{page_path(p)}\">{html.escape(p.title)}</a></li>" for p in passages
    )
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Corpus</title></head>\n"
        f"<body><h1>Corpus</h1><ul>\n{links}\n</ul></body></html>\n"
    )

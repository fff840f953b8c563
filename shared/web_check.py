"""Check web retrieval results against the pages they name.

Both the API (which filters what miners return before a client sees it) and
the validator (which scores it) ask the same questions of a result::

    result = parse_result(raw)                 # WebResult, or None when malformed
    pages = await PageFetcher(timeout=5, max_bytes=1_000_000).fetch_many([result.url])
    content_on_page(result.content, pages[result.url])   # is the content really on the page?

A result is well formed when it has string ``url``, ``content`` and
``relevant``, the URL is http(s) with a host, and ``relevant`` is part of
``content`` (whitespace-insensitive). Fetching is bounded: a timeout per page
and for the whole batch, a size cap, no redirects, and by default no private,
loopback or link-local addresses (``allow_private`` is for the local subnet),
so a miner cannot point the API or the validator at internal services.

The check cannot be raced by DNS (rebinding: a public answer for the check,
a private one for the connection). A host name is looked up once, by the
connection's own resolver (:class:`CheckedResolver`), which refuses the name
if any address is not public and hands the connection exactly the addresses
it checked; the request still carries the name (``Host``, and TLS's SNI and
certificate check). An address literal is checked as it is.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from html.parser import HTMLParser
from typing import Any, Iterable, Optional
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import ValidationError

from .schemas import WebResult
from .signed_http import TooLarge, read_capped

SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template"})
TEXT_TYPES = ("text/html", "text/plain", "application/xhtml+xml")


def normalise(text: str) -> str:
    """Whitespace collapsed to single spaces: layout must not decide a match."""
    return " ".join(text.split())


def http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in url)


DEFAULT_PORTS = {"http": 80, "https": 443}


def url_key(url: str) -> str:
    """What two URLs must share to be the same page.

    The scheme (http and https name the same page), the host's case, a default
    port, a trailing slash, the query and the fragment are all ignored: ``?v=2``
    or ``#again`` does not make another page out of the same one.
    """
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None and port != DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    path = parts.path.rstrip("/") or "/"
    return urlunsplit(("http", host, path, "", ""))


def url_host(url: str) -> str:
    """``host`` or ``host:port`` (a port only when it is not the scheme's default), lower-case."""
    return urlsplit(url_key(url)).netloc


def parse_result(raw: Any) -> Optional[WebResult]:
    """The result if it is well formed (see the module docstring), else None."""
    if not isinstance(raw, dict):
        return None
    try:
        result = WebResult.model_validate(raw, strict=True)
    except ValidationError:
        return None
    if not http_url(result.url):
        return None
    relevant, content = normalise(result.relevant), normalise(result.content)
    if not relevant or relevant not in content:
        return None
    return result


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in SKIPPED_TAGS:
            self.skipping += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_TAGS and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def page_text(html: str) -> str:
    """The visible text of an HTML page, whitespace-normalised (entities decoded)."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    return normalise(" ".join(parser.parts))


def content_on_page(content: str, text: Optional[str]) -> bool:
    return text is not None and normalise(content) in text


def public_address(address: str) -> bool:
    """Reachable on the public internet: not private, loopback, link-local, reserved, shared or multicast."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_global
    except ValueError:
        return False


class BlockedAddress(OSError):
    """A host that is, or resolves to, an address the fetcher may not connect to."""


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver, with the address check in it: what is checked is what the connection uses.

    ``is_public`` decides an address (tests may swap it); every address of a name must pass,
    or the name is refused (an answer mixing public and private addresses is an attack too).
    """

    def __init__(self, is_public=public_address) -> None:
        self.is_public = is_public

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        if not infos:
            raise BlockedAddress(f"{host} has no address")
        results: list[ResolveResult] = []
        for info_family, _, proto, _, sockaddr in infos:
            address = str(sockaddr[0])
            if not self.is_public(address):
                raise BlockedAddress(f"{host} resolves to a non-public address")
            results.append(ResolveResult(hostname=host, host=address, port=int(sockaddr[1]), family=info_family,
                                         proto=proto, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV))
        return results

    async def close(self) -> None:
        pass


class PageFetcher:
    """Fetch pages' text with the limits above; a page that cannot be had is ``None``."""

    def __init__(self, *, timeout: float = 5.0, max_bytes: int = 1_000_000, allow_private: bool = False,
                 max_pages: int = 64, concurrency: int = 16, is_public=public_address):
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.allow_private = allow_private
        self.max_pages = max_pages
        self.concurrency = concurrency
        self.is_public = is_public

    def session(self) -> aiohttp.ClientSession:
        """A session whose connections go only to checked addresses (any address with ``allow_private``)."""
        resolver = None if self.allow_private else CheckedResolver(self.is_public)
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver, limit=self.concurrency))

    def literal_allowed(self, host: str) -> bool:
        """An address literal is never resolved (aiohttp connects to it as it is): it is checked here."""
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return True  # a name: the session's resolver checks it
        return self.allow_private or self.is_public(host)

    async def fetch(self, session: aiohttp.ClientSession, url: str) -> Optional[str]:
        """One page through ``session``, which must come from :meth:`session` (its resolver is the check)."""
        if not http_url(url):
            return None
        parts = urlsplit(url)
        try:
            parts.port
        except ValueError:
            return None
        if not self.literal_allowed(parts.hostname):
            return None
        try:
            async with asyncio.timeout(self.timeout):
                async with session.get(url, allow_redirects=False) as response:
                    kind = response.content_type or ""
                    if response.status != 200 or not kind.startswith(TEXT_TYPES):
                        return None
                    body = await read_capped(response, self.max_bytes)
                    text = body.decode(response.charset or "utf-8", errors="replace")
        except (aiohttp.ClientError, TimeoutError, OSError, LookupError, ValueError, TooLarge):
            return None
        return normalise(text) if kind == "text/plain" else page_text(text)

    async def fetch_many(self, urls: Iterable[str],
                         session: Optional[aiohttp.ClientSession] = None) -> dict[str, Optional[str]]:
        """Each distinct URL fetched once, at most ``max_pages`` of them, all within ``timeout`` overall.

        A caller's ``session`` is used only when private addresses are allowed (nothing to check);
        otherwise the batch goes through a session of :meth:`session`, whose resolver checks and pins.
        """
        wanted = list(dict.fromkeys(urls))[: self.max_pages]
        pages: dict[str, Optional[str]] = dict.fromkeys(wanted)
        if not wanted:
            return pages
        own = session is None or not self.allow_private
        if own:
            session = self.session()
        slots = asyncio.Semaphore(self.concurrency)

        async def one(url: str) -> None:
            async with slots:
                pages[url] = await self.fetch(session, url)

        try:
            async with asyncio.timeout(self.timeout + 1.0):
                await asyncio.gather(*(one(url) for url in wanted))
        except TimeoutError:
            pass  # what arrived is kept; the rest stays None
        finally:
            if own:
                await session.close()
        return pages

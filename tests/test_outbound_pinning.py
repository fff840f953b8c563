"""DNS rebinding against the page fetcher: the address that was checked is the address connected to.

A name resolves to a "public" address for the check and to a private one for
the connection. Two real HTTP servers listen on the same port: a public page on
127.0.0.5 (counted as public by the test's rule) and a secret on 127.0.0.1.
The resolver is the event loop's ``getaddrinfo``, answering differently on the
second lookup.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from shared.web_check import PageFetcher

PUBLIC, PRIVATE = "127.0.0.5", "127.0.0.1"
NAME = "pages.rebind.test"


def only_public(address: str) -> bool:
    """The test's stand-in for "on the public internet": 127.0.0.5 only."""
    return address == PUBLIC


class Site(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: str, port: int, text: str):
        self.text, self.hosts = text, []
        super().__init__((address, port), Page)


class Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.server.hosts.append(self.headers.get("Host"))
        body = f"<html><body><p>{self.server.text}</p></body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    """(public, private) servers on one port number."""
    for _ in range(50):
        public = Site(PUBLIC, 0, "a public page")
        try:
            private = Site(PRIVATE, public.server_address[1], "the internal secret")
        except OSError:
            public.server_close()
            continue
        break
    else:
        pytest.skip("no port free on both addresses")
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (public, private)]
    for thread in threads:
        thread.start()
    yield public, private
    for site in (public, private):
        site.shutdown()
        site.server_close()


def rebinding_dns(monkeypatch, answers: list[str]) -> list[str]:
    """The running loop's ``getaddrinfo`` answers ``answers`` in turn (the last one ever after); returns the log."""
    loop = asyncio.get_running_loop()
    asked: list[str] = []

    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        if host != NAME:
            return await original(host, port, family=family, type=type, proto=proto, flags=flags)
        address = answers[min(len(asked), len(answers) - 1)]
        asked.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 80)))]

    original = loop.getaddrinfo
    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return asked


async def test_a_rebinding_name_fetches_nothing_private(sites, monkeypatch):
    public, private = sites
    asked = rebinding_dns(monkeypatch, [PUBLIC, PRIVATE])
    url = f"http://{NAME}:{public.server_address[1]}/page"
    pages = await PageFetcher(timeout=3, is_public=only_public).fetch_many([url])
    assert private.hosts == []  # the secret server never saw a request
    assert pages[url] == "a public page"  # the checked address is where the request went
    assert public.hosts == [f"{NAME}:{public.server_address[1]}"]  # with the name as its Host
    assert asked == [PUBLIC]  # one lookup: the check and the connection share it


async def test_a_name_with_any_private_address_is_refused(sites, monkeypatch):
    public, private = sites
    rebinding_dns(monkeypatch, [PRIVATE])
    url = f"http://{NAME}:{public.server_address[1]}/page"
    pages = await PageFetcher(timeout=3, is_public=only_public).fetch_many([url])
    assert pages[url] is None and private.hosts == [] and public.hosts == []


async def test_private_literals_are_refused_and_allowed_only_when_asked(sites):
    public, private = sites
    url = f"http://{PRIVATE}:{private.server_address[1]}/page"
    assert (await PageFetcher(timeout=3, is_public=only_public).fetch_many([url]))[url] is None
    assert private.hosts == []
    assert (await PageFetcher(timeout=3, allow_private=True).fetch_many([url]))[url] == "the internal secret"

"""A small independent HTTP client for the key, limit and metering tests (aiohttp, no SDK retries)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

import aiohttp

MESSAGES = [{"role": "user", "content": "hi"}]


class Answer:
    def __init__(self, status: int, headers: Any, body: Any):
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body!r:.200})"


async def call(method: str, url: str, *, headers: Optional[dict] = None, json: Any = None,
               session: Optional[aiohttp.ClientSession] = None) -> Answer:
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with session.request(method, url, headers=headers, json=json,
                                   timeout=aiohttp.ClientTimeout(total=30)) as response:
            body = await response.json(content_type=None)
            return Answer(response.status, response.headers, body)
    finally:
        if own:
            await session.close()


async def admin(net, method: str, path: str, json: Any = None, url: Optional[str] = None) -> Answer:
    return await call(method, (url or net.api_url) + "/api_management" + path,
                      headers={"admin-key": net.admin_key}, json=json)


async def chat(url: str, key: str, session: Optional[aiohttp.ClientSession] = None, **body: Any) -> Answer:
    payload = {"model": "default", "messages": MESSAGES, "max_tokens": 3, **body}
    return await call("POST", url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json=payload, session=session)


async def burst(urls: list[str], key: str, count: int, **body: Any) -> list[Answer]:
    """``count`` chat requests at once, spread over ``urls`` in turn."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=count)) as session:
        return await asyncio.gather(*(chat(urls[i % len(urls)], key, session, **body) for i in range(count)))


async def eventually(check, timeout: float, interval: float = 0.05):
    """Poll ``check`` (async, returns a truthy value when done) until ``timeout``; the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval)

"""Signed HTTP calls between our processes, over one pooled aiohttp session.

    client = SignedClient(Signer(keypair))            # once per process, in the lifespan
    directory = await client.get_json("http://127.0.0.1:8092", "/directory", receiver=vali_hotkey)
    async with client.post_stream(miner_url, "/v1/chat/completions", body, receiver=miner_hotkey) as resp:
        async for line in resp.content: ...

Each call is signed for its receiver with a fresh nonce, and the exact bytes
that were signed are the bytes sent.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

import aiohttp
import orjson

from .auth import Signer
from .http_pool import HttpPool


class SignedCallError(Exception):
    """A signed call failed: connection error, timeout, or a non-2xx answer."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class TooLarge(Exception):
    """An answer bigger than the caller accepts."""


async def read_capped(response: aiohttp.ClientResponse, max_bytes: Optional[int]) -> bytes:
    """The whole body, or ``TooLarge`` as soon as it passes ``max_bytes`` (None: no cap)."""
    if max_bytes is None:
        return await response.read()
    parts, size = [], 0
    async for part in response.content.iter_chunked(65536):
        size += len(part)
        if size > max_bytes:
            raise TooLarge(f"answer larger than {max_bytes} bytes")
        parts.append(part)
    return b"".join(parts)


def base_url(address: str) -> str:
    """``ip:port`` from the metagraph, or a full URL from the settings → a URL without a trailing slash."""
    address = address.rstrip("/")
    return address if "://" in address else f"http://{address}"


def plain_http_target(url: str) -> Optional[tuple[str, int]]:
    """``(host, port)`` of an ``http://host:port`` URL without a path; None for anything else."""
    if not url.startswith("http://"):
        return None
    host, _, port = url[7:].rpartition(":")
    if not host or not port.isdigit() or "/" in host or "@" in host:
        return None
    return host.strip("[]"), int(port)


class SignedClient:
    def __init__(self, signer: Signer, *, limit: int = 512):
        self.signer = signer
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300),
            json_serialize=json.dumps,
        )
        self.pool = HttpPool()

    async def close(self) -> None:
        await self.pool.close()
        await self.session.close()

    def _headers(self, method: str, path: str, body: bytes, receiver: str) -> dict[str, str]:
        headers = self.signer.headers(method, path, body, receiver=receiver)
        if body:
            headers["Content-Type"] = "application/json"
        return headers

    async def request_json(
        self, method: str, address: str, path: str, *, receiver: str, body: bytes = b"", timeout: float = 10.0,
        max_bytes: Optional[int] = None,
    ) -> Any:
        url = base_url(address) + path
        headers = self._headers(method, path, body, receiver)
        try:
            async with self.session.request(
                method, url, data=body or None, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                try:
                    payload = await read_capped(response, max_bytes)
                except TooLarge as exc:
                    raise SignedCallError(f"{method} {path}: {exc}", response.status) from None
                if response.status >= 300:
                    raise SignedCallError(
                        f"{method} {path} → {response.status}: {payload[:300].decode('utf-8', 'replace')}",
                        response.status,
                    )
                return orjson.loads(payload) if payload else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SignedCallError(f"{method} {path} failed: {type(exc).__name__}: {exc}") from None

    async def get_json(self, address: str, path: str, *, receiver: str, timeout: float = 10.0) -> Any:
        return await self.request_json("GET", address, path, receiver=receiver, timeout=timeout)

    async def post_json(self, address: str, path: str, payload: Any, *, receiver: str, timeout: float = 10.0) -> Any:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return await self.request_json("POST", address, path, receiver=receiver, body=body, timeout=timeout)

    @asynccontextmanager
    async def post_stream(
        self, address: str, path: str, body: bytes, *, receiver: str, connect_timeout: float, read_timeout: float
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a POST whose answer the caller reads as it comes (``response.content.iter_any()``) or whole.

        Plain ``http://`` peers (every miner on a local subnet, most on a real one) go through the pooled
        client of ``shared.http_pool``; ``https://`` ones through aiohttp.
        """
        headers = self._headers("POST", path, body, receiver)
        url = base_url(address)
        target = plain_http_target(url)
        if target is not None:
            async with self.pool.post(*target, path, headers, body, connect_timeout=connect_timeout,
                                      read_timeout=read_timeout) as response:
                yield response
            return
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        async with self.session.post(url + path, data=body, headers=headers, timeout=timeout) as response:
            yield response

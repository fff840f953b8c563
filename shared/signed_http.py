"""Signed HTTP calls between our processes, over one pooled aiohttp session.

    client = SignedClient(Signer(keypair))            # once per process, in the lifespan
    directory = await client.get_json("http://127.0.0.1:8092", "/directory", receiver=vali_hotkey)
    async with client.post_stream(miner_url, "/v1/chat/completions", body, receiver=miner_hotkey) as resp:
        async for line in resp.content: ...

Each call is signed for its receiver with a fresh nonce, and the exact bytes
that were signed are the bytes sent. With ``sessions=True`` a call to a receiver
that offers ``btsession/1`` carries a session MAC instead (docs/sessions.md).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Optional

import aiohttp
import orjson

from .auth import Signer
from .http_pool import HttpPool, PooledResponse, TooLarge
from .session_client import SessionKeeper
from .sessions import HEADER_ERROR as SESSION_ERROR_HEADER
from .sessions import PATH as SESSION_PATH


class SignedCallError(Exception):
    """A signed call failed: connection error, timeout, or a non-2xx answer."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


async def read_capped(response: Any, max_bytes: Optional[int]) -> bytes:
    """The whole body, or ``TooLarge`` as soon as it passes ``max_bytes`` (None: no cap); aiohttp's answer or
    the pooled client's."""
    if isinstance(response, PooledResponse):
        return await response.read(max_bytes)
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


def session_refusal(response: Any) -> Optional[str]:
    """``Btsession-Error`` of a 401 (the session request was refused unprocessed), else None."""
    if response.status != 401:
        return None
    return response.headers.get(SESSION_ERROR_HEADER.lower())


class SignedClient:
    """``sessions=True``: btsession/1 to receivers that offer it (``shared.session_client``), signatures otherwise."""

    def __init__(self, signer: Signer, *, limit: int = 512, sessions: bool = False):
        self.signer = signer
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300),
            json_serialize=json.dumps,
        )
        self.pool = HttpPool()
        self.sessions = SessionKeeper(signer.hotkey, self._shake) if sessions else None

    async def close(self) -> None:
        if self.sessions is not None:
            await self.sessions.close()
        await self.pool.close()
        await self.session.close()

    def _signed(self, method: str, path: str, body: bytes, receiver: str) -> dict[str, str]:
        headers = self.signer.headers(method, path, body, receiver=receiver)
        if body:
            headers["Content-Type"] = "application/json"
        return headers

    def _headers(self, method: str, path: str, body: bytes, receiver: str,
                 address: str) -> tuple[dict[str, str], Optional[str]]:
        """Session headers and the session's id when there is a live session with ``receiver``, else signed ones."""
        if self.sessions is not None:
            found = self.sessions.headers(method, path, body, receiver=receiver, address=address)
            if found is not None:
                headers, session_id = found
                if body:
                    headers["Content-Type"] = "application/json"
                return headers, session_id
        return self._signed(method, path, body, receiver), None

    def _refused(self, response: Any, receiver: str, session_id: Optional[str]) -> bool:
        """True when a session request was refused before it was processed: send it again, signed."""
        if session_id is None or self.sessions is None:
            return False
        marker = session_refusal(response)
        if marker is None:
            return False
        self.sessions.refused(receiver, session_id, marker)
        return True

    async def _shake(self, address: str, receiver: str, body: bytes) -> Any:
        return await self.request_json("POST", address, SESSION_PATH, receiver=receiver, body=body, signed=True,
                                       max_bytes=4096)

    async def request_json(
        self, method: str, address: str, path: str, *, receiver: str, body: bytes = b"", timeout: float = 10.0,
        max_bytes: Optional[int] = None, signed: bool = False,
    ) -> Any:
        """``signed``: never over a session (the handshake itself)."""
        url = base_url(address) + path
        if signed:
            headers, session_id = self._signed(method, path, body, receiver), None
        else:
            headers, session_id = self._headers(method, path, body, receiver, address)
        try:
            while True:
                async with self.session.request(
                    method, url, data=body or None, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
                ) as response:
                    if self._refused(response, receiver, session_id):
                        headers, session_id = self._signed(method, path, body, receiver), None
                        continue
                    try:
                        payload = await read_capped(response, max_bytes)
                    except TooLarge as exc:
                        raise SignedCallError(f"{method} {path}: {exc}", response.status) from None
                    break
            if response.status >= 300:
                raise SignedCallError(
                    f"{method} {path} → {response.status}: {payload[:300].decode('utf-8', 'replace')}",
                    response.status,
                )
            return orjson.loads(payload) if payload else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SignedCallError(f"{method} {path} failed: {type(exc).__name__}: {exc}") from None

    async def get_json(self, address: str, path: str, *, receiver: str, timeout: float = 10.0,
                       max_bytes: Optional[int] = None) -> Any:
        """``max_bytes``: a ``SignedCallError`` for a bigger answer (anything a miner sends: it is untrusted)."""
        return await self.request_json("GET", address, path, receiver=receiver, timeout=timeout, max_bytes=max_bytes)

    async def post_json(self, address: str, path: str, payload: Any, *, receiver: str, timeout: float = 10.0) -> Any:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return await self.request_json("POST", address, path, receiver=receiver, body=body, timeout=timeout)

    def post_stream(self, address: str, path: str, body: bytes, *, receiver: str, connect_timeout: float,
                    read_timeout: float, total_timeout: Optional[float] = None) -> "SignedPost":
        """Open a POST whose answer the caller reads as it comes (``response.content.iter_any()``) or whole.

            async with client.post_stream(address, path, body, receiver=…, connect_timeout=…, read_timeout=…) as r:

        Plain ``http://`` peers (every miner on a local subnet, most on a real one) go through the pooled
        client of ``shared.http_pool``; ``https://`` ones through aiohttp.

        A session request that the receiver refuses unprocessed (``Btsession-Error``: it restarted, or the
        session expired) goes once more, signed; the caller sees only that second answer.

        ``total_timeout``: ``TimeoutError`` once the whole answer has taken longer than that (a time limit
        on the connection's own timer; no loop timer armed and cancelled per call), unless moved first with
        ``SignedPost.extend_total_timeout`` (a stream's first-chunk deadline, once its first content is in).
        """
        return SignedPost(self, address, path, body, receiver, connect_timeout, read_timeout, total_timeout)


class SignedPost:
    """``SignedClient.post_stream``'s context manager: a class, not an ``asynccontextmanager`` (an async
    generator and four more Python calls on every call to a miner)."""

    __slots__ = ("_client", "_address", "_path", "_body", "_receiver", "_connect_timeout", "_read_timeout",
                 "_started", "_until", "_opened", "_response", "_guard")

    def __init__(self, client: SignedClient, address: str, path: str, body: bytes, receiver: str,
                 connect_timeout: float, read_timeout: float, total_timeout: Optional[float] = None):
        self._client = client
        self._address = address
        self._path = path
        self._body = body
        self._receiver = receiver
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        # the loop time the total runs out, from the call on (a refused session's resend shares it)
        self._started = asyncio.get_running_loop().time()
        self._until = None if total_timeout is None else self._started + total_timeout
        self._opened: Any = None  # the inner context manager whose answer the caller holds
        self._response: Any = None
        self._guard: Optional[asyncio.Timeout] = None  # the total's loop timer, for https only

    def extend_total_timeout(self, total_timeout: Optional[float]) -> None:
        """The call's total time limit is now ``total_timeout`` seconds from its start (None: only the read
        timeout applies): a stream whose first content came within the first-chunk deadline may then run
        until the limit on a whole stream (``api.miner_call``)."""
        until = self._until = None if total_timeout is None else self._started + total_timeout
        if self._guard is not None:
            self._guard.reschedule(until)
        elif isinstance(self._response, PooledResponse):
            self._response.set_total_deadline(until)

    async def __aenter__(self) -> Any:
        url = base_url(self._address)
        target = plain_http_target(url)
        if target is not None or self._until is None:
            return await self._send(url, target)
        # https: aiohttp's own total cannot be lifted once a stream has started, so a loop timer of ours
        # (entered here and left in ``__aexit__``, in the caller's task) bounds the call instead.
        self._guard = guard = asyncio.timeout_at(self._until)
        await guard.__aenter__()
        try:
            return await self._send(url, target)
        except BaseException as exc:
            self._guard = None
            await guard.__aexit__(type(exc), exc, exc.__traceback__)  # raises TimeoutError when it fired
            raise

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self._close(*exc_info)
        finally:
            guard, self._guard = self._guard, None
            if guard is not None:
                await guard.__aexit__(*exc_info)

    async def _send(self, url: str, target: Optional[tuple[str, int]]) -> Any:
        """The answer, sent over a session when there is one; once more, signed, when the session is refused."""
        client, path, body, receiver = self._client, self._path, self._body, self._receiver
        headers, session_id = client._headers("POST", path, body, receiver, self._address)
        if session_id is not None:
            response = await self._open(url, target, headers)
            if not client._refused(response, receiver, session_id):
                return response
            await self._close()
            headers = client._signed("POST", path, body, receiver)
        return await self._open(url, target, headers)

    async def _open(self, url: str, target: Optional[tuple[str, int]], headers: dict[str, str]) -> Any:
        if target is not None:
            total = None if self._until is None else max(0.001, self._until - asyncio.get_running_loop().time())
            opened = self._client.pool.post(*target, self._path, headers, self._body,
                                            connect_timeout=self._connect_timeout, read_timeout=self._read_timeout,
                                            total_timeout=total)
        else:
            timeout = aiohttp.ClientTimeout(sock_connect=self._connect_timeout, sock_read=self._read_timeout)
            opened = self._client.session.post(url + self._path, data=self._body, headers=headers, timeout=timeout)
        self._response = response = await opened.__aenter__()
        self._opened = opened
        return response

    async def _close(self, *exc_info: Any) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            await opened.__aexit__(*(exc_info or (None, None, None)))

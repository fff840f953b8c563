"""The sender's half of ``btsession/1`` (``shared.sessions``): one session per receiver, kept fresh in the background.

    keeper = SessionKeeper(my_hotkey, shake=post_signed_handshake)     # SignedClient makes one
    session_headers = keeper.headers("POST", "/v1/chat/completions", body, receiver=hk, address=url)
    # None: no session with that receiver yet → sign the request as before (a handshake starts in the background)

    keeper.refused(receiver, session_id, marker)   # a 401 with ``Btsession-Error``: the request goes again, signed

Rules: a request never waits for a handshake; one handshake at a time per receiver; a failed one
backs off (1 s, doubling, at most ``MAX_BACKOFF``); a receiver that answers 404 or 405 to
``POST /session`` does not offer sessions and is asked again only after ``NO_SESSIONS_SECONDS``;
a session is renewed once ``RENEW_AT`` of its lifetime has passed and not used in its last
``EXPIRY_MARGIN`` seconds. A receiver that restarted answers the next session request
``Btsession-Error: unknown``: that session is dropped and a new one made.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

import orjson
from loguru import logger

from .sessions import (
    HEADER_ID,
    HEADER_MAC,
    HEADER_SEQ,
    HEADER_TIMESTAMP,
    UNKNOWN,
    KeyedMac,
    agree,
    mac,
    new_private_key,
    public_bytes,
)

NO_SESSIONS_SECONDS = 300.0
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 300.0
RENEW_AT = 0.8
EXPIRY_MARGIN = 5.0

# ``shake(address, receiver, body)`` sends a signed ``POST /session`` and returns the JSON answer, or raises an
# exception with ``.status`` (the HTTP status, None when there was no answer).
Shake = Callable[[str, str, bytes], Awaitable[Any]]


def accept_answer(answer: Any, private: Any, *, sender: str, receiver: str) -> tuple[bytes, bytes, float]:
    """The session id, key and lifetime from a receiver's answer to ``POST /session`` made with ``private``.

    ``KeyError``/``ValueError``/``TypeError`` for an answer that is not one.
    """
    session_id = bytes.fromhex(answer["session"])
    their_public = bytes.fromhex(answer["public_key"])
    lifetime = min(max(float(answer["lifetime"]), 0.0), 3600.0)
    key = agree(private, their_public, sender=sender, receiver=receiver, sender_public=public_bytes(private),
                receiver_public=their_public, session_id=session_id)
    return session_id, key, lifetime


@dataclass(eq=False)
class SenderSession:
    id: str
    key: bytes
    renew_at: float  # time.monotonic()
    expires: float
    seq: int = 0
    keyed: KeyedMac = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.keyed = KeyedMac(self.key)

    def headers(self, method: str, target: str, body: bytes) -> dict[str, str]:
        self.seq += 1
        timestamp = time.time_ns() // 1_000_000
        return {HEADER_ID: self.id, HEADER_SEQ: str(self.seq), HEADER_TIMESTAMP: str(timestamp),
                HEADER_MAC: mac(self.keyed, self.id, self.seq, timestamp, method, target, body)}


@dataclass(eq=False)
class Peer:
    address: str = ""
    session: Optional[SenderSession] = None
    shaking: Optional[asyncio.Task] = None
    retry_at: float = 0.0  # no handshake before this (time.monotonic())
    backoff: float = FIRST_BACKOFF


class SessionKeeper:
    def __init__(self, hotkey: str, shake: Shake):
        self.hotkey = hotkey
        self._shake = shake
        self._peers: dict[str, Peer] = {}
        self.handshakes = 0  # made, since start

    def session_id(self, receiver: str) -> Optional[str]:
        peer = self._peers.get(receiver)
        return peer.session.id if peer is not None and peer.session is not None else None

    def headers(self, method: str, target: str, body: bytes, *, receiver: str,
                address: str) -> Optional[tuple[dict[str, str], str]]:
        """Session headers and the session's id, or None (sign this one) while there is no live session."""
        peer = self._peers.get(receiver)
        if peer is None:
            peer = self._peers[receiver] = Peer()
        peer.address = address
        now = time.monotonic()
        session = peer.session
        if session is not None and now >= session.expires:
            session = peer.session = None
        if session is None or now >= session.renew_at:
            self._start(receiver, peer)
        if session is None:
            return None
        return session.headers(method, target, body), session.id

    def refused(self, receiver: str, session_id: str, marker: Optional[str]) -> None:
        """The receiver answered 401 with ``Btsession-Error``: forget that session if it no longer knows it."""
        peer = self._peers.get(receiver)
        if marker == UNKNOWN and peer is not None and peer.session is not None and peer.session.id == session_id:
            peer.session = None
            self._start(receiver, peer)  # a new one now, while this request goes again signed

    def _start(self, receiver: str, peer: Peer) -> None:
        if peer.shaking is None and time.monotonic() >= peer.retry_at:
            peer.shaking = asyncio.get_running_loop().create_task(self._handshake(receiver, peer),
                                                                 name=f"session-{receiver[:8]}")

    async def _handshake(self, receiver: str, peer: Peer) -> None:
        private = new_private_key()
        own_public = public_bytes(private)
        started = time.monotonic()
        try:
            answer = await self._shake(peer.address, receiver, orjson.dumps({"public_key": own_public.hex()}))
            session_id, key, lifetime = accept_answer(answer, private, sender=self.hotkey, receiver=receiver)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status in (404, 405):  # this receiver does not offer sessions: sign every request to it
                peer.retry_at = time.monotonic() + NO_SESSIONS_SECONDS
            else:
                peer.retry_at = time.monotonic() + peer.backoff
                peer.backoff = min(peer.backoff * 2, MAX_BACKOFF)
                logger.debug("session handshake with {} failed: {}", receiver, exc)
            return
        finally:
            peer.shaking = None
        peer.backoff = FIRST_BACKOFF
        peer.session = SenderSession(session_id.hex(), key, renew_at=started + lifetime * RENEW_AT,
                                     expires=started + lifetime - min(EXPIRY_MARGIN, lifetime * 0.1))
        self.handshakes += 1

    async def close(self) -> None:
        tasks = [peer.shaking for peer in self._peers.values() if peer.shaking is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

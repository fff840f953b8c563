"""``btsession/1``: a per-pair key agreed over one signed request, then an HMAC per request.

Handshake (once per sender and receiver, renewed before it expires)::

    POST /session   signed as any request (btauth/1 or Epistula), body {"public_key": hex(X25519, 32 bytes)}
    → 200 {"session": hex(16 bytes), "public_key": hex(X25519, 32 bytes), "lifetime": seconds}

    key = HKDF-SHA256(X25519(own secret, peer public), salt=session id,
                      info="btsession/1" | sender | receiver | sender public | receiver public | session id)

Every request after it carries, instead of a signature::

    Btsession-Id: <hex>    Btsession-Seq: <1, 2, …>    Btsession-Timestamp: <ms since the epoch>
    Btsession-Mac: hex(HMAC-SHA256(key, "btsession/1\\n" id "\\n" seq "\\n" timestamp "\\n" METHOD "\\n"
                                        target "\\n" + body))

The receiver (``SessionTable``) refuses, each with a ``bittensor.http_auth`` error (401): an unknown
or expired session (``SessionUnknown``; the answer carries ``Btsession-Error: unknown``, so the sender
re-sends that request signed and shakes hands again), a timestamp outside ``btauth/1``'s freshness
window, a MAC that does not verify, and a sequence number already accepted or older than the
window of the last ``WINDOW`` (out of order is fine: requests share a connection pool). The caller's
access policy is asked on every request, as for a signed one. Nothing is written to disk per request.
See docs/sessions.md for why this is as safe as ``btauth/1``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping, Optional

from bittensor import http_auth
from bittensor.http_auth import BadSignature, Caller, MalformedAuth, ReplayedRequest, StaleRequest
from Crypto.Hash import SHA256
from Crypto.Protocol.DH import import_x25519_public_key, key_agreement
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC

PROTOCOL = b"btsession/1"
PATH = "/session"
HEADER_ID = "Btsession-Id"
HEADER_SEQ = "Btsession-Seq"
HEADER_TIMESTAMP = "Btsession-Timestamp"
HEADER_MAC = "Btsession-Mac"
HEADER_ERROR = "Btsession-Error"  # on a 401: "unknown" (shake hands again) or "window" (re-send signed)
UNKNOWN = "unknown"
OUT_OF_WINDOW = "window"

LIFETIME_SECONDS = 600.0
WINDOW = 1024  # sequence numbers accepted out of order (IPsec's and WireGuard's anti-replay window)
# Sessions one sender hotkey holds at a receiver. Several processes share a hotkey (the validator and every API
# worker, on every host), each with up to two per receiver while it renews: room for ~128 of them.
MAX_PER_HOTKEY = 256
MAX_SESSIONS = 4096  # sessions a receiver holds in all
MAX_AGE_MS = int(http_auth.DEFAULT_MAX_AGE * 1000)  # the same freshness as btauth/1
ALLOWED_SKEW_MS = int(http_auth.DEFAULT_ALLOWED_SKEW * 1000)



def _field(headers: Mapping[str, str], name: str) -> Optional[str]:
    """A header by name in a case-insensitive mapping, a lower-cased ASGI one, or a plain dict as sent."""
    value = headers.get(name.lower())
    return value if value is not None else headers.get(name)


_SESSION_HEADERS = (HEADER_ID, HEADER_SEQ, HEADER_TIMESTAMP, HEADER_MAC)
_SESSION_HEADERS_LOWER = tuple(name.lower() for name in _SESSION_HEADERS)


def _session_fields(headers: Mapping[str, str]) -> list[Optional[str]]:
    """The id, sequence number, timestamp and MAC headers (``_field``'s look-up, the four in one call)."""
    get = headers.get
    values = [get(name) for name in _SESSION_HEADERS_LOWER]
    if None in values:
        values = [get(name) if value is None else value for value, name in zip(values, _SESSION_HEADERS)]
    return values


def _number(value: Optional[str]) -> Optional[int]:
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


class SessionUnknown(http_auth.AuthError):
    """No such session here (never made, expired, evicted, or the receiver restarted)."""

    marker = UNKNOWN


class OutOfWindow(ReplayedRequest):
    """A sequence number older than the window: refused; the sender may re-send the request signed."""

    marker = OUT_OF_WINDOW


def derive_key(shared_secret: bytes, *, sender: str, receiver: str, sender_public: bytes, receiver_public: bytes,
               session_id: bytes) -> bytes:
    info = b"|".join([PROTOCOL, sender.encode(), receiver.encode(), sender_public, receiver_public, session_id])
    return HKDF(shared_secret, 32, session_id, SHA256, context=info)


def new_private_key() -> ECC.EccKey:
    return ECC.generate(curve="Curve25519")


def public_bytes(key: ECC.EccKey) -> bytes:
    return key.public_key().export_key(format="raw")


def agree(private: ECC.EccKey, peer_public: bytes, **binding: object) -> bytes:
    """The session key from our secret and the peer's raw public key; ``ValueError`` for a bad key."""
    peer = import_x25519_public_key(peer_public)  # refuses low-order points (an all-zero shared secret)
    return key_agreement(static_priv=private, static_pub=peer,
                         kdf=lambda secret: derive_key(secret, **binding))  # type: ignore[arg-type]


class KeyedMac:
    """HMAC-SHA256 under one key (RFC 2104), with the keyed inner and outer states computed once.

    ``hmac.digest`` asks OpenSSL for the algorithm and keys it again on every call; a session's key is
    fixed for its life, so each request here costs two copies of hash states already keyed: half the
    work, and the same bytes as ``hmac.digest(key, data, "sha256")`` (tests/test_sessions.py).
    """

    __slots__ = ("_inner", "_outer")
    BLOCK = 64  # SHA-256's block size

    def __init__(self, key: bytes):
        if len(key) > self.BLOCK:
            key = hashlib.sha256(key).digest()
        block = key.ljust(self.BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def hexdigest(self, data: bytes) -> str:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


def mac(keyed: KeyedMac, session_id: str, seq: int, timestamp_ms: int, method: str, target: str,
        body: bytes) -> str:
    head = f"btsession/1\n{session_id}\n{seq}\n{timestamp_ms}\n{method}\n{target}\n".encode("latin-1")
    return keyed.hexdigest(head + body)


def is_session_request(headers: Mapping[str, str]) -> bool:
    return _field(headers, HEADER_ID) is not None


@dataclass(eq=False)
class Session:
    """One agreed key at the receiver, with its anti-replay window."""

    id: str
    key: bytes
    hotkey: str
    crypto_type: int
    expires: float  # time.monotonic()
    highest: int = 0  # the highest sequence number accepted
    seen: int = 0  # bit i: highest - i was accepted
    lock: threading.Lock = field(default_factory=threading.Lock)
    keyed: KeyedMac = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.keyed = KeyedMac(self.key)

    def accept(self, seq: int) -> None:
        """Mark ``seq`` as used, or ``ReplayedRequest`` if it was, or ``OutOfWindow`` if it is too old."""
        with self.lock:
            if seq > self.highest:
                shift = seq - self.highest
                self.seen = ((self.seen << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
                self.highest = seq
                return
            offset = self.highest - seq
            if offset >= WINDOW:
                raise OutOfWindow(f"sequence number is older than the last {WINDOW}")
            if self.seen >> offset & 1:
                raise ReplayedRequest("this sequence number was already accepted in this session")
            self.seen |= 1 << offset


class SessionTable:
    """The receiver's sessions: bounded per sender hotkey and in all, the oldest evicted first.

    ``accept_handshake`` is called with the caller of a verified signed ``POST /session``;
    ``check_headers`` and ``authenticate`` are what a ``RequestVerifier`` runs for a session request.
    """

    def __init__(self, self_hotkey: str, *, lifetime: float = LIFETIME_SECONDS, max_per_hotkey: int = MAX_PER_HOTKEY,
                 max_sessions: int = MAX_SESSIONS):
        self.self_hotkey = self_hotkey
        self.lifetime = lifetime
        self.max_per_hotkey = max_per_hotkey
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # oldest first
        self._by_hotkey: dict[str, OrderedDict[str, None]] = {}
        self._lock = threading.Lock()
        self.handshakes = 0  # accepted, since start (what the tests and metrics read)

    def __len__(self) -> int:
        return len(self._sessions)

    def count_for(self, hotkey: str) -> int:
        return len(self._by_hotkey.get(hotkey, ()))

    def accept_handshake(self, caller: Caller, sender_public: bytes) -> dict:
        """A new session for a verified caller: the answer to its ``POST /session``. ``ValueError``: bad key."""
        private = new_private_key()
        own_public = public_bytes(private)
        session_id = os.urandom(16)
        key = agree(private, sender_public, sender=caller.hotkey_ss58, receiver=self.self_hotkey,
                    sender_public=sender_public, receiver_public=own_public, session_id=session_id)
        session = Session(session_id.hex(), key, caller.hotkey_ss58, caller.crypto_type,
                          time.monotonic() + self.lifetime)
        with self._lock:
            self._sweep()
            mine = self._by_hotkey.setdefault(session.hotkey, OrderedDict())
            while len(mine) >= self.max_per_hotkey:
                self._drop(next(iter(mine)))
            while len(self._sessions) >= self.max_sessions:
                self._drop(next(iter(self._sessions)))
            self._sessions[session.id] = session
            mine[session.id] = None
            self.handshakes += 1
        return {"session": session.id, "public_key": own_public.hex(), "lifetime": self.lifetime}

    def _drop(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        mine = self._by_hotkey.get(session.hotkey)
        if mine is not None:
            mine.pop(session_id, None)
            if not mine:
                del self._by_hotkey[session.hotkey]

    def _sweep(self) -> None:
        """Drop expired sessions (all have the same lifetime, so the oldest expire first)."""
        now = time.monotonic()
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.expires > now:
                return
            self._drop(oldest.id)

    def _live(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None or session.expires <= time.monotonic():
            raise SessionUnknown("no such session at this receiver (expired, evicted or never made): shake hands again")
        return session

    def check_headers(self, headers: Mapping[str, str], *, now_ms: Optional[int] = None) -> Session:
        """What can be checked before the body: the session exists, the fields are well formed, the time is fresh."""
        return self._checked(headers, now_ms)[0]

    def _checked(self, headers: Mapping[str, str], now_ms: Optional[int]) -> tuple[Session, int, int, str]:
        """``check_headers``, and the sequence number, timestamp and MAC it read."""
        session_id, seq, timestamp, given = _session_fields(headers)
        if not session_id or seq is None or timestamp is None or not given:
            raise MalformedAuth(f"a session request needs {HEADER_ID}, {HEADER_SEQ}, {HEADER_TIMESTAMP} and "
                                f"{HEADER_MAC}")
        if not _number(seq) or not _number(timestamp):
            raise MalformedAuth(f"{HEADER_SEQ} and {HEADER_TIMESTAMP} must be positive decimal integers")
        session = self._live(session_id)
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        sent_at = int(timestamp)
        if now - sent_at > MAX_AGE_MS:
            raise StaleRequest(f"{HEADER_TIMESTAMP} is older than the {MAX_AGE_MS / 1000:g}s freshness window")
        if sent_at - now > ALLOWED_SKEW_MS:
            raise StaleRequest(f"{HEADER_TIMESTAMP} is more than {ALLOWED_SKEW_MS / 1000:g}s in the future")
        return session, int(seq), sent_at, given

    def authenticate(self, method: str, target: str, headers: Mapping[str, str], body: bytes, *,
                     now_ms: Optional[int] = None) -> Caller:
        """The session's sender, or an ``AuthError``; the sequence number is marked only once the MAC verifies."""
        session, seq, timestamp, given = self._checked(headers, now_ms)
        expected = mac(session.keyed, session.id, seq, timestamp, method, target, body)
        if not hmac.compare_digest(expected.encode(), given.lower().encode("latin-1")):
            raise BadSignature("session MAC does not verify")
        session.accept(seq)
        return Caller(hotkey_ss58=session.hotkey, nonce_ns=timestamp * 1_000_000, crypto_type=session.crypto_type)


__all__ = ["HEADER_ERROR", "HEADER_ID", "HEADER_MAC", "HEADER_SEQ", "HEADER_TIMESTAMP", "KeyedMac", "OutOfWindow",
           "PATH", "Session", "SessionTable", "SessionUnknown", "agree", "is_session_request", "mac", "new_private_key",
           "public_bytes"]

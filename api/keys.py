"""API keys: how they are made, stored (hashed) and looked up on the hot path.

A key is ``sk-sn-`` + 32 random bytes, shown once, at creation; the store keeps
only its sha256 and a masked hint. Each key also has a public ``id``
(``key_…``) that operators, logs and the usage endpoints use, so the secret
never has to travel again. Looking a key up by its hash means no stored secret
is ever compared byte by byte.

Every worker keeps what it looked up for at most ``KEY_CACHE_SECONDS`` (one
second by default), without a store round trip per request. Sooner than that,
a change to any key (admin API on any worker or host, or the CLI) bumps the
store's key generation, and every worker drops its cache when it sees a new
one: at once on one host (a counter in shared memory, ``store.key_stamp``), within
milliseconds across hosts (PostgreSQL ``NOTIFY``). The time limit is the
backstop when a notification is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional

from .ratelimit import Window

# The largest count a key holds (credits, limits, token budgets): exact as a JSON number in every client
# (JavaScript's safe integers), and far inside the stores' 64-bit integers, so that sums of them (a top-up,
# a key's counters) cannot overflow a column. Past it the admin API answers 422, not a database error.
LARGEST_COUNT = 2**53 - 1

KEY_PREFIX = "sk-sn-"
ID_PREFIX = "key_"


_SHA256 = hashlib.sha256()  # copied per key: a new hash object asks OpenSSL for the algorithm every time


def hash_key(key: str) -> str:
    digest = _SHA256.copy()
    digest.update(key.encode())
    return digest.hexdigest()


def mask(key: str) -> str:
    return f"{key[:len(KEY_PREFIX) + 4]}…{key[-4:]}"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return ID_PREFIX + secrets.token_hex(8)


@dataclass(frozen=True)
class KeyRecord:
    id: str
    key_hash: str
    key_hint: str
    name: str = ""
    enabled: bool = True
    created_at: float = 0.0
    updated_at: float = 0.0
    expires_at: Optional[float] = None
    credits: Optional[int] = None  # remaining; None: unlimited
    credits_used: int = 0  # debited from a finite balance (refunds subtracted)
    rate_limits: tuple[Window, ...] = ()
    allowed_tasks: Optional[tuple[str, ...]] = None  # None: any
    allowed_models: Optional[tuple[str, ...]] = None  # None: any ("default" names the default route)
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    charged: int = 0  # credits charged over the key's life (unlimited keys too)
    last_used_at: Optional[float] = None
    token_quota: Optional[int] = None  # tokens (prompt + completion) the key may use in all; None: the default
    tpm_limit: Optional[int] = None  # tokens per minute; None: the default (``api.token_budget``)

    def expired(self, now: Optional[float] = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at


@dataclass
class KeyCache:
    """Key hash → record (or None: unknown), each entry trusted for ``ttl`` seconds."""

    load: Callable[[str], Awaitable[Optional[KeyRecord]]]
    ttl: float = 1.0
    generation: Optional[Callable[[], int]] = None  # changes whenever any key changed
    max_entries: int = 100_000
    _entries: dict[str, tuple[float, Optional[KeyRecord]]] = field(default_factory=dict)
    _generation: int = 0
    _loading: dict[str, asyncio.Future] = field(default_factory=dict)

    async def get(self, key_hash: str) -> Optional[KeyRecord]:
        if self.generation is not None:
            current = self.generation()
            if current != self._generation:
                self._entries.clear()
                self._generation = current
        now = time.monotonic()
        hit = self._entries.get(key_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        # One look-up per key at a time: when an entry expires under load, every request waiting for that
        # key shares it instead of queueing its own behind the store's writes.
        loading = self._loading.get(key_hash)
        if loading is None:
            loading = self._loading[key_hash] = asyncio.ensure_future(self._load(key_hash, now))
            loading.add_done_callback(lambda _: self._loading.pop(key_hash, None))
        return await asyncio.shield(loading)

    async def _load(self, key_hash: str, now: float) -> Optional[KeyRecord]:
        generation = self._generation
        record = await self.load(key_hash)
        if generation == self._generation:  # a key changed meanwhile: what was read may be stale
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # a flood of unknown keys must not grow memory
            self._entries[key_hash] = (now + self.ttl, record)
        return record

    def forget(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)

"""Per-key rate limits: sliding windows, counted where every worker sees them.

    windows = parse_windows("60 per minute and 1000 per day")
    decision = await limiter.hit(key_id, windows)      # counts this request when every window admits it
    if not decision.allowed: 429, Retry-After: decision.retry_after
    response headers: decision.headers()               # X-RateLimit-Limit / -Remaining / -Reset

A window admits at most ``limit`` requests in any ``seconds``-long span (a
sliding log, not fixed buckets), so a burst across a bucket boundary cannot
pass twice the limit. The log lives in Redis when ``REDIS_URL`` is set (one
Lua script: atomic across every worker and host, on Redis's clock), else in
the SQL store (one locked transaction). Both answer the same ``Decision``.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from typing import Protocol

UNITS = {"second": 1, "sec": 1, "s": 1, "minute": 60, "min": 60, "m": 60, "hour": 3600, "h": 3600,
         "day": 86400, "d": 86400, "week": 604800, "w": 604800}
WINDOW_TEXT = re.compile(r"^\s*(\d+)\s*(?:per|/)\s*(\d+)?\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True, order=True)
class Window:
    """At most ``limit`` requests in any ``seconds``-long span."""

    limit: int
    seconds: int

    def describe(self) -> str:
        for name, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
            if self.seconds % size == 0:
                count = self.seconds // size
                return f"{self.limit} per {name}" if count == 1 else f"{self.limit} per {count} {name}s"
        return f"{self.limit} per {self.seconds} seconds" if self.seconds != 1 else f"{self.limit} per second"

    def as_dict(self) -> dict:
        return {"limit": self.limit, "seconds": self.seconds}


def parse_windows(text: str) -> list[Window]:
    """``"60 per minute and 1000 per day"``, ``"60/min, 1000/day"``, ``"10 per 30 seconds"``."""
    windows = []
    for part in re.split(r"\s*(?:,|;|\band\b)\s*", text.strip().lower()):
        if not part:
            continue
        match = WINDOW_TEXT.match(part)
        if not match or match.group(3) not in UNITS:
            raise ValueError(f"cannot read rate limit {part!r}; write e.g. '60 per minute and 1000 per day'")
        limit, count, unit = int(match.group(1)), int(match.group(2) or 1), UNITS[match.group(3)]
        if limit < 1 or count < 1:
            raise ValueError(f"rate limit {part!r} must be positive")
        windows.append(Window(limit, count * unit))
    return normalise(windows)


def normalise(windows: list[Window]) -> list[Window]:
    """One window per span (the last one given wins), shortest first."""
    by_span = {w.seconds: w for w in windows}
    return sorted(by_span.values(), key=lambda w: w.seconds)


@dataclass(frozen=True)
class WindowState:
    window: Window
    used: int  # requests in the window, this one included when it was admitted
    reset: float  # seconds until the oldest request in the window leaves it
    retry_after: float  # seconds until one more request fits (0 when one fits now)

    @property
    def remaining(self) -> int:
        return max(0, self.window.limit - self.used)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    states: list[WindowState]

    @property
    def retry_after(self) -> float:
        return max((s.retry_after for s in self.states), default=0.0)

    @property
    def tightest(self) -> WindowState:
        """The window that will refuse first: least remaining, then the shortest."""
        return min(self.states, key=lambda s: (s.remaining, s.window.seconds))

    def refused_by(self) -> WindowState:
        return max(self.states, key=lambda s: s.retry_after)

    def headers(self) -> list[tuple[bytes, bytes]]:
        if not self.states:
            return []
        tight = self.tightest
        policy = ", ".join(f"{s.window.limit};w={s.window.seconds}" for s in self.states)
        return [(b"x-ratelimit-limit", str(tight.window.limit).encode()),
                (b"x-ratelimit-remaining", str(tight.remaining).encode()),
                (b"x-ratelimit-reset", str(max(0, math.ceil(tight.reset))).encode()),
                (b"x-ratelimit-policy", policy.encode())]


def decide(windows: list[Window], counts: list[int], resets: list[float], retries: list[float],
           admitted_now: bool, weight: int = 1) -> Decision:
    """Build the decision from what the counter saw before this request (``weight`` slots) was (or was
    not) added."""
    allowed = all(c + weight <= w.limit for w, c in zip(windows, counts))
    states = []
    for window, count, reset, retry in zip(windows, counts, resets, retries):
        used = count + weight if (allowed and admitted_now) else count
        states.append(WindowState(window, used, reset if count else float(window.seconds), retry))
    return Decision(allowed, states)


class RateLimiter(Protocol):
    async def hit(self, key_id: str, windows: list[Window], weight: int = 1) -> Decision:
        """Count ``weight`` slots (one request, or its units of work) if every window admits them all;
        say how full the windows are."""

    async def peek(self, key_id: str, windows: list[Window]) -> Decision:
        """How full the windows are, counting nothing."""

    async def close(self) -> None: ...


# KEYS[1]: the key's log (a sorted set of request ids scored by time in ms).
# ARGV: commit (1|0), member, weight, then limit and span (ms) for each window.
HIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local commit = tonumber(ARGV[1])
local weight = tonumber(ARGV[3])
local n = (#ARGV - 3) / 2
local longest = 0
for i = 0, n - 1 do
  local span = tonumber(ARGV[5 + 2 * i])
  if span > longest then longest = span end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
local out = {1}
for i = 0, n - 1 do
  local limit = tonumber(ARGV[4 + 2 * i])
  local span = tonumber(ARGV[5 + 2 * i])
  local since = '(' .. (now - span)
  local count = redis.call('ZCOUNT', KEYS[1], since, '+inf')
  local reset = span
  local retry = 0
  if count > 0 then
    local first = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    reset = tonumber(first[2]) + span - now
  end
  if count + weight > limit then
    out[1] = 0
    local index = count - limit + weight - 1
    if index >= count then
      retry = span
    else
      local nth = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', index, 1)
      retry = tonumber(nth[2]) + span - now
    end
  end
  out[#out + 1] = count
  out[#out + 1] = reset
  out[#out + 1] = retry
end
if out[1] == 1 and commit == 1 then
  for i = 1, weight do
    redis.call('ZADD', KEYS[1], now, ARGV[2] .. ':' .. i)
  end
  redis.call('PEXPIRE', KEYS[1], longest)
end
return out
"""


class StoreRateLimiter:
    """The sliding log in the SQL store, for deployments without Redis."""

    def __init__(self, store):
        self._store = store

    async def hit(self, key_id: str, windows: list[Window], weight: int = 1) -> Decision:
        return await self._store.rate_hit(key_id, windows, commit=True, weight=weight)

    async def peek(self, key_id: str, windows: list[Window]) -> Decision:
        return await self._store.rate_hit(key_id, windows, commit=False)

    async def close(self) -> None:
        pass


class RedisRateLimiter:
    """The sliding log in Redis: one script call per request, exact across hosts."""

    def __init__(self, url: str, prefix: str = "gateway:", max_connections: int = 64):
        import redis.asyncio as redis

        # A blocking pool: a burst beyond ``max_connections`` waits for a connection instead of failing.
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5.0,
                                                     socket_timeout=2.0, socket_connect_timeout=2.0)
        self._redis = redis.Redis(connection_pool=pool)
        self._script = self._redis.register_script(HIT_SCRIPT)
        self._prefix = prefix + "ratelimit:"

    async def _run(self, key_id: str, windows: list[Window], commit: bool, weight: int = 1) -> Decision:
        args: list = [1 if commit else 0, secrets.token_hex(8), weight]
        for window in windows:
            args += [window.limit, window.seconds * 1000]
        out = [int(x) for x in await self._script(keys=[self._prefix + key_id], args=args)]
        triples = [out[i:i + 3] for i in range(1, len(out), 3)]
        return decide(windows, [t[0] for t in triples], [t[1] / 1000 for t in triples],
                      [t[2] / 1000 for t in triples], admitted_now=commit, weight=weight)

    async def hit(self, key_id: str, windows: list[Window], weight: int = 1) -> Decision:
        return await self._run(key_id, windows, True, weight)

    async def peek(self, key_id: str, windows: list[Window]) -> Decision:
        return await self._run(key_id, windows, False)

    async def ping(self) -> None:
        """One round trip to Redis (readiness probes)."""
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()

"""Key guessing, throttled per client address across every worker.

    address = client_address(scope, trusted)            # X-Forwarded-For only from a trusted proxy
    await throttle.check("admin", address)              # 429 while this address is over its failures
    ... compare the key ...
    await throttle.failed("admin", address)             # count one failure; 429 once over the limit

Failures (a wrong admin key on ``/api_management``, an unknown, disabled or
expired API key) are counted in the rate limiter every worker shares (Redis,
else the store) under ``auth-fail:<kind>:<address>``, at most
``AUTH_FAILURE_LIMITS`` (default 20 per minute). Beyond it the address gets
429 with ``Retry-After`` instead of 401/403. Admin keys are checked before
every comparison (admin calls are rare). API keys are checked only when one
fails, so a good key costs no extra round trip; a worker that saw an address
refused then refuses that address's API-key requests itself until the window
says it may retry, without looking the key up.

The client address is the TCP peer, unless the peer is one of
``TRUSTED_PROXIES``: then it is the right-most ``X-Forwarded-For`` entry
that is not a trusted proxy (what a proxy appends cannot be forged by the
client; what the client wrote to the left of it can).
"""

from __future__ import annotations

import ipaddress
import math
import time
from typing import Any, Optional, Union

from loguru import logger

from .errors import ApiError
from .ratelimit import Window, parse_windows

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"127.0.0.1, 10.0.0.0/8, ::1"``."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(scope: dict, networks: tuple[Network, ...]) -> str:
    """Who is calling: the peer, or what a trusted proxy says it forwarded for."""
    peer = scope.get("client")
    address = peer[0] if peer else "unknown"
    if not networks or not trusted(address, networks):
        return address
    forwarded = ",".join(value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for")
    for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # a hop we cannot read: believe no one beyond it
        if not trusted(hop, networks):
            return hop
        address = hop
    return address


class Throttle:
    def __init__(self, limiter: Any, windows: list[Window], proxies: tuple[Network, ...]):
        self.limiter = limiter
        self.windows = windows
        self.proxies = proxies
        self._refused: dict[str, float] = {}  # "kind:address" → monotonic time until which it is refused here

    @classmethod
    def from_settings(cls, limiter: Any, settings: Any) -> "Throttle":
        return cls(limiter, parse_windows(settings.auth_failure_limits), parse_networks(settings.trusted_proxies))

    def address(self, scope: dict) -> str:
        return client_address(scope, self.proxies)

    def refused_here(self, kind: str, address: str) -> Optional[int]:
        """Seconds to wait, when this worker already saw the address refused; no round trip."""
        until = self._refused.get(f"{kind}:{address}")
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            self._refused.pop(f"{kind}:{address}", None)
            return None
        return max(1, math.ceil(left))

    async def check(self, kind: str, address: str) -> None:
        """429 when the address is over its failures (one round trip to the shared counter)."""
        if not self.windows:
            return
        wait = self.refused_here(kind, address)
        if wait is None:
            decision = await self._ask(kind, address, commit=False)
            if decision is not None and not decision.allowed:
                wait = self._remember(kind, address, decision.retry_after)
        if wait is not None:
            raise self.too_many(wait)

    async def failed(self, kind: str, address: str) -> None:
        """Count one failure; 429 when it is one too many."""
        if not self.windows:
            return
        decision = await self._ask(kind, address, commit=True)
        if decision is not None and not decision.allowed:
            logger.warning("{} key guessing throttled for {}", kind, address)
            raise self.too_many(self._remember(kind, address, decision.retry_after))

    def raise_if_refused_here(self, kind: str, address: str) -> None:
        wait = self.refused_here(kind, address)
        if wait is not None:
            raise self.too_many(wait)

    def _remember(self, kind: str, address: str, retry_after: float) -> int:
        wait = max(1, math.ceil(retry_after))
        if len(self._refused) > 10_000:
            self._refused.clear()  # a flood of addresses must not grow memory
        self._refused[f"{kind}:{address}"] = time.monotonic() + wait
        return wait

    async def _ask(self, kind: str, address: str, commit: bool):
        try:
            if commit:
                return await self.limiter.hit(f"auth-fail:{kind}:{address}", self.windows)
            return await self.limiter.peek(f"auth-fail:{kind}:{address}", self.windows)
        except Exception as exc:  # the counter is down: the keys still decide; say so
            logger.error("key-guessing throttle unavailable: {}", type(exc).__name__)
            return None

    def too_many(self, wait: int) -> ApiError:
        return ApiError(429, f"too many failed keys from this address; retry in {wait} s",
                        "too_many_failed_keys", headers={"Retry-After": str(wait)})

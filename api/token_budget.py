"""Token budgets per key, beside credits (per request) and request rate limits.

    await check_token_budget(gateway, key, meter)     # at admission (``access.Admit``), metered routes only
    await token_budget_view(gateway, key)             # for ``GET /v1/usage``, the admin API and the dashboard

- ``token_quota``: prompt + completion tokens the key may use in all (ZenGPT's
  ``DEFAULT_TOKEN_QUOTA``); past it, 402 ``token_quota_exceeded``.
- ``tpm_limit``: tokens per minute, over a sliding minute (this minute's tokens plus
  the previous minute's, weighted by how much of it is still inside the last 60 s);
  past it, 429 ``token_rate_limit_exceeded`` with ``Retry-After``.

A key without its own uses ``DEFAULT_TOKEN_QUOTA`` / ``DEFAULT_TPM_LIMIT`` (0: none).
Tokens are what the meter records from usage (the miner's count when it gives one that can be
true, ``api.responses.usage_of``; words otherwise), streams included: a stream the client cut off counts what it was
sent. Both limits are read from the store that every worker and host shares: the quota
from the key's counters, the per-minute tokens from the request-log roll-ups
(``usage_minutes``). They trail the last requests by the recorder's flush interval
and the key cache (about a second), so a key may overshoot by what its requests
already in flight use; the next request is refused.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Optional

from .errors import ApiError
from .keys import KeyRecord

if TYPE_CHECKING:
    from .gateway import Gateway

MINUTE = 60


def budgets(gateway: Gateway, key: KeyRecord) -> tuple[Optional[int], Optional[int]]:
    """(token quota, tokens per minute) for this key; None: no limit."""
    settings = gateway.settings
    quota = key.token_quota if key.token_quota is not None else (settings.default_token_quota or None)
    tpm = key.tpm_limit if key.tpm_limit is not None else (settings.default_tpm_limit or None)
    return quota, tpm


def tokens_used(key: KeyRecord) -> int:
    return key.prompt_tokens + key.completion_tokens


async def tokens_last_minute(gateway: Gateway, key_id: str, now: float) -> tuple[float, float]:
    """(tokens in the sliding minute, seconds until the current minute ends)."""
    minute = int(now // MINUTE)
    rows = await gateway.store.db.fetch(
        "SELECT minute, SUM(prompt_tokens + completion_tokens) AS tokens FROM usage_minutes"
        " WHERE key_id = $1 AND minute >= $2 GROUP BY minute", key_id, minute - 1)
    by_minute = {int(r["minute"]): int(r["tokens"] or 0) for r in rows}
    elapsed = now - minute * MINUTE
    sliding = by_minute.get(minute, 0) + by_minute.get(minute - 1, 0) * (1 - elapsed / MINUTE)
    return sliding, MINUTE - elapsed


async def check_token_budget(gateway: Gateway, key: KeyRecord, meter: Any) -> None:
    """402 past the quota, 429 past the tokens-per-minute limit; X-RateLimit-*-Tokens headers when limited."""
    quota, tpm = budgets(gateway, key)
    if quota is not None and tokens_used(key) >= quota:
        raise ApiError(402, f"token quota used up: this key may use {quota} tokens in all and has used"
                            f" {tokens_used(key)}; ask the operator for more", "token_quota_exceeded")
    if tpm is None:
        return
    used, reset = await tokens_last_minute(gateway, key.id, time.time())
    remaining = max(0, tpm - math.ceil(used))
    meter.headers = [*meter.headers, (b"x-ratelimit-limit-tokens", str(tpm).encode()),
                     (b"x-ratelimit-remaining-tokens", str(remaining).encode())]
    if used >= tpm:
        wait = max(1, math.ceil(reset))
        raise ApiError(429, f"token rate limit exceeded: this key may use {tpm} tokens per minute;"
                            f" retry in {wait} s", "token_rate_limit_exceeded", headers={"Retry-After": str(wait)})


async def token_budget_view(gateway: Gateway, key: KeyRecord) -> dict:
    """The key's token budgets and where it stands (``None``: no limit)."""
    quota, tpm = budgets(gateway, key)
    used = tokens_used(key)
    view: dict = {"token_quota": quota, "tokens_used": used,
                  "tokens_remaining": None if quota is None else max(0, quota - used), "tpm_limit": tpm}
    if tpm is not None:
        minute, _ = await tokens_last_minute(gateway, key.id, time.time())
        view["tokens_last_minute"] = math.ceil(minute)
        view["tpm_remaining"] = max(0, tpm - math.ceil(minute))
    return view

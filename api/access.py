"""Admission for every public route: key, rate limits, credits — one dependency.

    @router.post("/v1/chat/completions")
    async def chat(body: …, request: Request, key: KeyRecord = Depends(admit)): …

    @router.get("/v1/models")                       # authenticated, costs nothing, counts nothing
    async def models(request: Request, key: KeyRecord = Depends(identify)): …

In order: the key (401 missing, unknown, disabled, expired), its rate limits
(429 with ``Retry-After``; counted across every worker and host), its credits
(402 when a finite balance cannot pay; taken atomically in the store and given
back by ``meter.settle`` unless a miner answered). The X-RateLimit-* headers
found here go on the response whatever its status. A route then calls
``require_allowed`` once it knows the task and model of the request.
"""

from __future__ import annotations

import math
from typing import Optional

from fastapi import Request
from loguru import logger

from .auth import authenticate
from .errors import ApiError
from .gateway import gateway_of
from .keys import KeyRecord
from .meter import meter_of
from .token_budget import check_token_budget


class Admit:
    """``cost``: credits per request (None: ``CREDITS_PER_REQUEST``); ``counted``: whether it uses the rate
    limit and is metered (request log, usage counters)."""

    def __init__(self, cost: Optional[int] = None, counted: bool = True):
        self.cost = cost
        self.counted = counted

    async def __call__(self, request: Request) -> KeyRecord:
        gateway = gateway_of(request)
        meter = meter_of(request)
        key = await authenticate(request)
        meter.key = key
        meter.logged = self.counted
        windows = list(key.rate_limits) or gateway.default_windows
        if windows:
            try:
                if self.counted:
                    decision = await gateway.limiter.hit(key.id, windows)
                else:
                    decision = await gateway.limiter.peek(key.id, windows)
            except Exception as exc:  # Redis or the store is down: refuse rather than admit unlimited
                logger.error("rate limiter unavailable: {}: {}", type(exc).__name__, exc)
                raise ApiError(503, "rate limiting is unavailable right now; retry shortly",
                               "rate_limiter_unavailable", headers={"Retry-After": "1"}) from None
            meter.headers = decision.headers()
            if self.counted and not decision.allowed:
                refused = decision.refused_by()
                wait = max(1, math.ceil(decision.retry_after))
                raise ApiError(429, f"rate limit exceeded: this key may make {refused.window.describe()};"
                               f" retry in {wait} s", "rate_limit_exceeded", headers={"Retry-After": str(wait)})
        if self.counted:
            await check_token_budget(gateway, key, meter)  # token quota and tokens per minute (api.token_budget)
        cost = gateway.settings.credits_per_request if self.cost is None else self.cost
        meter.cost = cost
        if cost and key.credits is not None:
            if await gateway.store.debit(key.id, cost) is None:
                raise ApiError(402, f"out of credits: this key has fewer than {cost} credit(s) left;"
                               " ask the operator for more", "insufficient_credits")
            meter.reserved = cost
        return key


admit = Admit()
identify = Admit(cost=0, counted=False)


def require_allowed(key: KeyRecord, *, task: Optional[str] = None, model: Optional[str] = None) -> None:
    """403 when the key is limited to other tasks or models (``default`` names the default route)."""
    if task is not None and key.allowed_tasks is not None and task not in key.allowed_tasks:
        raise ApiError(403, f"this key may not use task {task!r}; allowed: {', '.join(key.allowed_tasks) or 'none'}",
                       "task_not_allowed")
    name = model or "default"
    if key.allowed_models is not None and name not in key.allowed_models:
        raise ApiError(403, f"this key may not use model {name!r}; allowed: {', '.join(key.allowed_models) or 'none'}",
                       "model_not_allowed")

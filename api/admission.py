"""What a request costs: units of miner work, admitted before any miner is asked.

    units = chat_units(body, width, settings)       # once the miners are chosen
    await admit_units(request, key, units)          # 400 beyond MAX_REQUEST_UNITS; 429; 402

``access.Admit`` admits every request for one unit (its key, one rate-limit
slot, ``CREDITS_PER_REQUEST`` credits). A request that asks for more work is
admitted here for the rest, before its first miner call: each further unit
takes one more slot in every rate-limit window of the key and
``CREDITS_PER_REQUEST`` more credits, both given back like the first when no
miner answers. One unit is what a plain chat completion costs:

- chat: ``n`` × races, a race being ``FANOUT`` miners at once (``uids`` or
  ``top_n`` wider than ``FANOUT`` run ``ceil(width / FANOUT)`` races);
- mixture: one unit per first-round miner (``MIXTURE_SIZE``, or the width, at most 8 and at most the
  miners available), plus ``n`` for the aggregation;
- test-time inference: (``REASONING_MAX_STEPS`` + ``n``) × races;
- ``/v1/completions``: the chat price × the number of prompts (at most
  ``COMPLETIONS_MAX_PROMPTS``);
- ``/web_retrieval``: one unit per miner asked (``n_miners``, or ``uids``).

A request of more than ``MAX_REQUEST_UNITS`` units is refused (400
``too_many_units``), and so is one larger than a window of its key's rate
limit (it could never be admitted).
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any, Optional

from fastapi import Request
from loguru import logger

from .errors import ApiError
from .keys import KeyRecord
from .meter import Meter, meter_of
from .mixture import MAX_FIRST_ROUND

if TYPE_CHECKING:
    from .gateway import Gateway


def races(width: int, fanout: int) -> int:
    return max(1, math.ceil(width / fanout)) if width else 1


def chat_units(body: Any, width: int, settings: Any, available: Optional[int] = None) -> int:
    """The units of one chat request whose ``available`` candidates were chosen with ``width`` (0: the
    gateway's choice)."""
    if body.wants_mixture:
        first = min(width or settings.mixture_size, MAX_FIRST_ROUND, available or MAX_FIRST_ROUND)
        return first + body.n
    if body.wants_reasoning:
        return (settings.reasoning_max_steps + body.n) * races(width, settings.fanout)
    return body.n * races(width, settings.fanout)


def retrieval_units(query: Any) -> int:
    return len(query.uids) if query.uids else query.n_miners


def set_parts(request: Request, parts: int) -> None:
    """The request is ``parts`` chat requests at once (``/v1/completions`` with a list of prompts)."""
    meter_of(request).parts = parts


async def admit_units(gateway: Gateway, meter: Meter, key: KeyRecord, units: int) -> None:
    """Admit the request for ``units`` (times its parts); once per request, whichever part comes first."""
    if meter.admission is None:
        units *= meter.parts
        if units <= 1:
            # Nothing beyond what ``access.admit`` took: ``admit_more`` has nothing to wait for (no limiter, no
            # store), so it runs here, not in a task of its own behind a shield (two turns of the event loop
            # fewer); it cannot be cancelled half way, having no await. Other parts find it done.
            admission = meter.admission = asyncio.get_running_loop().create_future()
            try:
                await admit_more(gateway, meter, key, units)
            except ApiError as exc:
                admission.set_exception(exc)
                admission.exception()  # retrieved: a request of one part never awaits it again
                raise
            admission.set_result(None)
            return
        meter.admission = asyncio.ensure_future(admit_more(gateway, meter, key, units))
    await asyncio.shield(meter.admission)


async def admit_more(gateway: Gateway, meter: Meter, key: KeyRecord, units: int) -> None:
    settings = gateway.settings
    if units > settings.max_request_units:
        raise ApiError(400, f"this request asks for {units} units of miner work; at most {settings.max_request_units}"
                       " are admitted per request (MAX_REQUEST_UNITS): send fewer prompts, n, uids or top_n",
                       "too_many_units")
    meter.units = units
    extra = units - 1
    if extra <= 0:
        return
    windows = list(key.rate_limits) or gateway.default_windows
    if windows:
        smallest = min(w.limit for w in windows)
        if units > smallest:
            raise ApiError(400, f"this request asks for {units} units of miner work; this key's rate limit admits"
                           f" at most {smallest} per window", "too_many_units")
        try:
            decision = await gateway.limiter.hit(key.id, windows, weight=extra)
        except Exception as exc:
            logger.error("rate limiter unavailable: {}: {}", type(exc).__name__, exc)
            raise ApiError(503, "rate limiting is unavailable right now; retry shortly",
                           "rate_limiter_unavailable", headers={"Retry-After": "1"}) from None
        meter.headers = decision.headers()
        if not decision.allowed:
            refused = decision.refused_by()
            wait = max(1, math.ceil(decision.retry_after))
            raise ApiError(429, f"rate limit exceeded: this request needs {units} units and this key may make"
                           f" {refused.window.describe()}; retry in {wait} s", "rate_limit_exceeded",
                           headers={"Retry-After": str(wait)})
    per_unit = meter.cost
    if per_unit and key.credits is not None:
        if await gateway.store.debit(key.id, per_unit * extra) is None:
            raise ApiError(402, f"out of credits: this request costs {per_unit * units} credit(s)"
                           f" ({units} units); ask the operator for more", "insufficient_credits")
        meter.reserved += per_unit * extra
    meter.cost = per_unit * units

"""Screen prompts through any OpenAI-compatible moderation endpoint, when one is configured.

    moderator = Moderator(session, "https://api.openai.com/v1/moderations", api_key=..., fail_open=True)
    await screen(gateway.moderator, ["the user's text", ...])   # in a route: raises the right ApiError, or returns

``screen`` sends the texts as one ``{"input": [...]}`` request and reads
OpenAI's answer (``{"results": [{"flagged": bool, "categories": {...}}]}``).
A flagged prompt is a 400 with code ``content_flagged`` naming the categories.
When the endpoint cannot be asked (down, slow, a non-2xx answer, garbage),
the operator decides: fail open (``MODERATION_FAIL_OPEN=true``, the default:
the request goes on and a warning is logged) or fail closed (503
``moderation_unavailable``). Without ``MODERATION_URL`` nothing is screened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

import aiohttp
from loguru import logger

from .errors import ApiError

MAX_INPUTS = 32  # the most recent texts of a long conversation


class ModerationUnavailable(Exception):
    """The moderation endpoint did not give a usable answer."""


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    categories: tuple[str, ...] = ()


class Moderator:
    def __init__(self, session: aiohttp.ClientSession, url: str, *, api_key: str = "", model: str = "",
                 fail_open: bool = True, timeout: float = 5.0):
        self.session = session
        self.url = url
        self.api_key = api_key
        self.model = model
        self.fail_open = fail_open
        self.timeout = timeout

    async def check(self, texts: list[str]) -> Verdict:
        payload: dict[str, Any] = {"input": texts}
        if self.model:
            payload["model"] = self.model
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with self.session.post(self.url, json=payload, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                if response.status != 200:
                    raise ModerationUnavailable(f"moderation answered HTTP {response.status}")
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ModerationUnavailable(f"{type(exc).__name__}: {exc}") from None
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or not all(isinstance(r, dict) and "flagged" in r for r in results):
            raise ModerationUnavailable("moderation answer has no results")
        categories = sorted({name for r in results if r["flagged"]
                             for name, hit in (r.get("categories") or {}).items() if hit})
        return Verdict(any(bool(r["flagged"]) for r in results), tuple(categories))


def message_texts(messages: Iterable[Any]) -> list[str]:
    """The text of each message (a string, or OpenAI's list of parts)."""
    texts = []
    for message in messages:
        content = message.content if hasattr(message, "content") else message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if isinstance(content, str) and content.strip():
            texts.append(content)
    return texts


async def screen(moderator: Optional[Moderator], texts: list[str]) -> None:
    """Raise 400 ``content_flagged`` (or 503 when failing closed); return when the prompt may go on.
    ``moderator`` is the gateway's (None: no moderation endpoint configured)."""
    texts = [t for t in texts if t.strip()][-MAX_INPUTS:]
    if moderator is None or not texts:
        return
    try:
        verdict = await moderator.check(texts)
    except ModerationUnavailable as exc:
        if moderator.fail_open:
            logger.warning("moderation unavailable, letting the prompt through (fail-open): {}", exc)
            return
        raise ApiError(503, "moderation is unavailable, so prompts cannot be accepted right now",
                       "moderation_unavailable") from None
    if verdict.flagged:
        reasons = ", ".join(verdict.categories) or "unspecified"
        raise ApiError(400, f"the prompt was flagged by moderation ({reasons})", "content_flagged")

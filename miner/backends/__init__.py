"""Where the miner's text comes from: ``builtin`` (deterministic, offline) or ``upstream``.

The builtin generator itself lives in ``shared.builtin_generator`` (the validator
re-derives its answers); ``miner.backends.builtin`` serves it.
"""

from __future__ import annotations

from typing import Any, Optional

from .base import Backend, ChoiceStream, Outcome
from .builtin import BuiltinBackend


def open_backend(settings: Any, session: Optional[Any] = None, pool: Optional[Any] = None, *,
                 copies: bool = False) -> Backend:
    """The backend ``MINER_BACKEND`` names; ``upstream`` needs the app's aiohttp session (and takes its pool)."""
    if settings.miner_backend == "upstream":
        from .upstream import UpstreamBackend

        if session is None:
            raise ValueError("the upstream backend needs an aiohttp.ClientSession")
        return UpstreamBackend(
            session, settings.upstream_url, api_key=settings.upstream_api_key, model=settings.upstream_model,
            pool=pool,
        )
    return BuiltinBackend(copies)


__all__ = ["Backend", "BuiltinBackend", "ChoiceStream", "Outcome", "open_backend"]

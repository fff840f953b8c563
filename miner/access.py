"""Who may call the miner: validators with a permit, plus hotkeys the operator lists.

Every route but ``/health`` depends on :func:`verified_caller`, which runs the
app's ``RequestVerifier`` (``btauth/1``: 401 for any signature problem) and
then this policy (403 for a valid signature from a hotkey that may not call).
The chat endpoint, plain ASGI, calls ``RequestVerifier.verify`` itself.
"""

from __future__ import annotations

from typing import Callable

from fastapi import Request

from shared.auth import Caller
from shared.chain.cache import MetagraphCache

from .settings import MinerSettings

FORBIDDEN = "caller is not a permitted validator on this subnet"


def caller_policy(settings: MinerSettings, metagraph: MetagraphCache) -> Callable[[str], bool]:
    extra = settings.extra_allowed_hotkeys

    def is_allowed(hotkey: str) -> bool:
        if not settings.require_validator_permit or hotkey in extra:
            return True
        return metagraph.has_validator_permit(hotkey)

    return is_allowed


async def verified_caller(request: Request) -> Caller:
    return await request.app.state.verifier(request)

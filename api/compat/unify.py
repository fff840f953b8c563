"""Unify's ``GET /get_credits`` → ``{"id", "credits"}`` (``credits`` null: unlimited).

The same answer as ``GET /v1/credits``: free, authenticated like every public route.
Unify's other habit, ``model@provider``, is ``model@<uid>`` or ``model@<hotkey>``
here (see ``api.model_names``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..access import identify
from ..key_admin import credits_view
from ..keys import KeyRecord
from ..routers.account import current

router = APIRouter(tags=["compatibility"])


@router.get("/get_credits")
async def get_credits(request: Request, key: KeyRecord = Depends(identify)) -> dict:
    return credits_view(await current(request, key))

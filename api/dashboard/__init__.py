"""The operator dashboard at ``/dashboard``: overview, keys, request logs, miners.

A small static app (``static/``: HTML, CSS, JavaScript and our own SVG
charts, nothing from a CDN) over JSON routes under ``/dashboard/api``. Every
route needs a session opened with the admin key (``session``); the data
comes from the same services as the admin API and the CLI (``KeyAdmin``,
``query_logs``, ``usage_report``) and from the store's per-minute roll-ups.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import keys, logs, miners, overview, pages

router = APIRouter()
for part in (pages, overview, keys, logs, miners):
    router.include_router(part.router)

__all__ = ["router"]

"""Dashboard sessions, in the store so that any worker on any host accepts them.

The browser holds a random token in a cookie; the store keeps only its sha256
(a stolen database row cannot be replayed as a cookie), the CSRF token that
state-changing calls must echo, and a fingerprint of the admin key it was
opened with, so rotating ``ADMIN_KEY`` ends every open session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Session:
    token_hash: str
    csrf_token: str
    admin_fingerprint: str
    created_at: float
    expires_at: float


class Sessions:
    def __init__(self, db: Any):
        self.db = db

    async def create(self, session: Session) -> None:
        now = time.time()
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM dashboard_sessions WHERE expires_at < $1", now)
            await tx.execute(
                "INSERT INTO dashboard_sessions (token_hash, csrf_token, admin_fingerprint, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4, $5)", session.token_hash, session.csrf_token, session.admin_fingerprint,
                float(session.created_at), float(session.expires_at))

    async def get(self, token_hash: str) -> Optional[Session]:
        row = await self.db.fetchrow(
            "SELECT token_hash, csrf_token, admin_fingerprint, created_at, expires_at FROM dashboard_sessions"
            " WHERE token_hash = $1", token_hash)
        if row is None:
            return None
        return Session(row["token_hash"], row["csrf_token"], row["admin_fingerprint"], row["created_at"],
                       row["expires_at"])

    async def delete(self, token_hash: str) -> None:
        await self.db.execute("DELETE FROM dashboard_sessions WHERE token_hash = $1", token_hash)

"""Dashboard login: the admin key once, then a session cookie; a CSRF token for every change.

    POST /dashboard/login  (form field admin_key)  → Set-Cookie: gateway_session=<random>; HttpOnly; SameSite=Strict
    GET  /dashboard/api/…   Depends(require_session)     → 401 without a live session
    POST /dashboard/api/…   Depends(require_csrf)        → 403 unless X-CSRF-Token matches the session's

The admin key travels once, in a POST body, and is never put in a URL, a
cookie or a log. The cookie holds a random token whose sha256 the store keeps
(with the session's expiry and CSRF token), so every worker on every host
accepts it and logging out ends it everywhere. SameSite=Strict keeps other
sites from sending the cookie at all; the CSRF token, which only the
dashboard's own page can read, is the second lock on every state change.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Optional
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response

from ..errors import ApiError
from ..gateway import gateway_of
from ..store.sessions import Session

COOKIE = "gateway_session"
COOKIE_PATH = "/dashboard"
CSRF_HEADER = "x-csrf-token"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def admin_fingerprint(admin_digest: bytes) -> str:
    """Names the admin key a session was opened with, without revealing anything about it."""
    return hashlib.sha256(b"dashboard-session:" + admin_digest).hexdigest()[:32]


def admin_key_matches(request: Request, given: str) -> bool:
    expected: bytes = gateway_of(request).admin_key_digest
    digest = hashlib.sha256(given.encode()).digest()
    return bool(expected) and bool(given) and hmac.compare_digest(digest, expected)


def same_origin(request: Request) -> bool:
    """False only when the browser says the request came from another origin."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":  # not told (old browsers, privacy modes): SameSite and the token decide
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def open_session(request: Request, response: Response) -> Session:
    settings = gateway_of(request).settings
    token, now = secrets.token_urlsafe(32), time.time()
    session = Session(token_hash=token_hash(token), csrf_token=secrets.token_urlsafe(32),
                      admin_fingerprint=admin_fingerprint(gateway_of(request).admin_key_digest), created_at=now,
                      expires_at=now + settings.dashboard_session_hours * 3600)
    await gateway_of(request).store.sessions.create(session)
    secure = settings.dashboard_cookie_secure or request.url.scheme == "https"
    response.set_cookie(COOKIE, token, max_age=int(settings.dashboard_session_hours * 3600), path=COOKIE_PATH,
                        httponly=True, samesite="strict", secure=secure)
    return session


async def current_session(request: Request) -> Optional[Session]:
    """The live session this request's cookie names, or None (none, unknown, expired, or another admin key)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    session = await gateway_of(request).store.sessions.get(token_hash(token))
    if session is None or session.expires_at <= time.time():
        return None
    if not hmac.compare_digest(session.admin_fingerprint, admin_fingerprint(gateway_of(request).admin_key_digest)):
        return None
    return session


async def close_session(request: Request, response: Response) -> None:
    token = request.cookies.get(COOKIE)
    if token:
        await gateway_of(request).store.sessions.delete(token_hash(token))
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


async def require_session(request: Request) -> Session:
    session = await current_session(request)
    if session is None:
        raise ApiError(401, "log in to the dashboard first", "dashboard_login_required")
    return session


async def require_csrf(request: Request, session: Session = Depends(require_session)) -> Session:
    given = request.headers.get(CSRF_HEADER, "")
    if not same_origin(request) or not given or not hmac.compare_digest(given, session.csrf_token):
        raise ApiError(403, "missing or wrong CSRF token; reload the dashboard", "csrf_failed")
    return session

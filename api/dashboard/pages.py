"""The dashboard's pages: login, logout, the app shell and its assets (all shipped in the package).

Nothing is fetched from a CDN: the HTML, CSS, JavaScript and the charts
(``charts.js``, SVG drawn by our own code) are files next to this module, and
the Content-Security-Policy allows nothing but this origin.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from loguru import logger

from ..errors import ApiError
from ..gateway import gateway_of
from ..ratelimit import Window
from .session import admin_key_matches, close_session, current_session, open_session, require_csrf, same_origin

STATIC = Path(__file__).resolve().parent / "static"
ASSET = re.compile(r"^[a-z][a-z0-9_-]*\.(js|css|svg)$")
MEDIA_TYPES = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
LOGIN_ATTEMPTS = Window(20, 60)  # per client address, across every worker: guessing stays hopeless
MAX_LOGIN_BODY = 4096
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
                               " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix="/dashboard", include_in_schema=False)


def page(name: str, status: int = 200, **values: str) -> HTMLResponse:
    text = (STATIC / name).read_text()
    for field, value in values.items():
        text = text.replace("{{" + field + "}}", html.escape(value))
    return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)


def login_page(error: str = "", status: int = 200) -> HTMLResponse:
    return page("login.html", status, error=error, error_class="error" if error else "error hidden")


@router.get("")
@router.get("/")
async def shell(request: Request) -> Response:
    session = await current_session(request)
    if session is None:
        return RedirectResponse("/dashboard/login", status_code=303)
    return page("index.html", csrf_token=session.csrf_token)


@router.get("/login")
async def login_form(request: Request) -> Response:
    if await current_session(request) is not None:
        return RedirectResponse("/dashboard", status_code=303)
    return login_page()


async def too_many_attempts(request: Request) -> bool:
    client = gateway_of(request).throttle.address(request.scope)  # X-Forwarded-For only from a trusted proxy
    try:
        decision = await gateway_of(request).limiter.hit(f"dashboard-login:{client}", [LOGIN_ATTEMPTS])
    except Exception as exc:  # the limiter is down: refuse rather than allow unlimited guessing
        logger.error("dashboard login limiter unavailable: {}", type(exc).__name__)
        return True
    return not decision.allowed


@router.post("/login")
async def login(request: Request) -> Response:
    """A plain form POST (no JavaScript needed); the key is read from the body, never from the URL."""
    body = await request.body()
    if len(body) > MAX_LOGIN_BODY or not same_origin(request):
        return login_page("Refused.", 400)
    if await too_many_attempts(request):
        return login_page(f"Too many attempts: at most {LOGIN_ATTEMPTS.describe()}. Wait a minute.", 429)
    given = (parse_qs(body.decode("utf-8", "replace")).get("admin_key") or [""])[0].strip()
    if not admin_key_matches(request, given):
        logger.warning("dashboard login refused from {}", gateway_of(request).throttle.address(request.scope))
        message = "Invalid admin key" if gateway_of(request).admin_key_digest else \
            "No ADMIN_KEY is configured: the dashboard is closed."
        return login_page(message, 401)
    response = RedirectResponse("/dashboard", status_code=303)
    await open_session(request, response)
    return response


@router.post("/logout")
async def logout(request: Request, _=Depends(require_csrf)) -> Response:
    response = JSONResponse({"message": "logged out"}, headers={"Cache-Control": "no-store"})
    await close_session(request, response)
    return response


@router.get("/static/{name}")
async def asset(name: str) -> Response:
    path = STATIC / name
    if not ASSET.match(name) or not path.is_file():
        raise ApiError(404, "no such dashboard asset", "not_found")
    return FileResponse(path, media_type=MEDIA_TYPES[name.rsplit(".", 1)[1]],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

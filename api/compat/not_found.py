"""A 404 that helps: OpenAI's error shape, naming the closest route.

    POST /chat/completions  →  404 {"error": {"message": "no route POST /chat/completions; did you mean
                                  POST /v1/chat/completions? The base URL should end in /v1 …", …}}

Clients configured with a base URL that lacks ``/v1`` (or has it twice) are the
most common cause, so those are recognised first; otherwise the nearest known
path by spelling is named.
"""

from __future__ import annotations

import difflib

from starlette.requests import Request

HIDDEN = ("/dashboard/api", "/openapi.json", "/docs", "/redoc")


def public_routes(app) -> dict[str, set[str]]:
    """Path → methods of the routes a client may call: the OpenAPI schema's (built once, then cached)."""
    paths = app.openapi().get("paths", {})
    return {path: {method.upper() for method in methods} for path, methods in paths.items()
            if not path.startswith(HIDDEN)}


def with_methods(path: str, routes: dict[str, set[str]]) -> str:
    return f"{'|'.join(sorted(routes[path]))} {path}"


def suggestion(method: str, path: str, routes: dict[str, set[str]]) -> str:
    trimmed = path.rstrip("/") or "/"
    for candidate, why in ((trimmed.replace("/v1/v1/", "/v1/", 1), "the base URL has /v1 twice"),
                           ("/v1" + trimmed, "the base URL should end in /v1 (e.g. http://host:port/v1)"),
                           (trimmed.removeprefix("/v1"), "this route is not under /v1")):
        if candidate != trimmed and candidate in routes:
            return f"; did you mean {with_methods(candidate, routes)}? {why}"
    if trimmed in routes:
        return f"; this path takes {'|'.join(sorted(routes[trimmed]))}, not {method}"
    close = difflib.get_close_matches(trimmed, list(routes), n=1, cutoff=0.5)
    if close:
        return f"; the closest route is {with_methods(close[0], routes)}"
    return "; see /docs for every route"


def not_found_message(request: Request) -> str:
    """What a 404 for a path no route matched says (``errors`` answers it, code ``route_not_found``)."""
    method, path = request.method, request.url.path
    return f"no route {method} {path}" + suggestion(method, path, public_routes(request.app))

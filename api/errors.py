"""OpenAI's error shape for every failure on the public API.

``{"error": {"message": str, "type": str, "code": str | int | None}}`` with the
right status. The ``openai`` SDK raises ``AuthenticationError`` on 401,
``RateLimitError`` on 429 and so on, reading ``message`` from this body.

Under ``/api_management`` the body also carries FastAPI's ``detail`` (the
message, or the list of validation errors), as the subnet's API answers, so
scripts written for it (``response.json()["detail"]``) keep working.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .json_response import FastJSONResponse

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


DETAIL_PREFIXES = ("/api_management",)  # where errors also carry the subnet's ``detail``


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: Optional[str] = None, headers: Optional[dict] = None,
                 detail: Any = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers
        self.detail = detail  # the subnet's ``detail`` when it is not the message (see DETAIL_PREFIXES)


def with_detail(request: Request, response: JSONResponse, body: dict, detail: Any) -> JSONResponse:
    """``response``, or the same error with ``detail`` added on the routes that carry it."""
    if not request.url.path.startswith(DETAIL_PREFIXES):
        return response
    return FastJSONResponse({**body, "detail": detail}, status_code=response.status_code,
                            headers={k: v for k, v in response.headers.items()
                                     if k not in ("content-length", "content-type")})


def error_body(status: int, message: str, code: Any = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "api_error"), "code": code if code else status}}


def error_response(status: int, message: str, code: Any = None, headers: Optional[dict] = None) -> JSONResponse:
    return FastJSONResponse(error_body(status, message, code), status_code=status, headers=headers)


def describe_validation_errors(errors: Any) -> str:
    """pydantic's errors (from FastAPI or from ``model_validate_json``) as one line a client can act on."""
    parts = []
    for error in list(errors)[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {error.get('msg')}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        request.state.error_code = exc.code  # for the metrics' error counter
        return with_detail(request, error_response(exc.status, exc.message, exc.code, exc.headers),
                           error_body(exc.status, exc.message, exc.code),
                           exc.message if exc.detail is None else exc.detail)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and "endpoint" not in request.scope:  # no route matched the path
            from .compat.not_found import not_found_message  # noqa: PLC0415

            message = not_found_message(request)
            return with_detail(request, error_response(404, message, "route_not_found"),
                               error_body(404, message, "route_not_found"), "Not Found")
        return with_detail(request, error_response(exc.status_code, str(exc.detail),
                                                   headers=getattr(exc, "headers", None)),
                           error_body(exc.status_code, str(exc.detail)), exc.detail)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        request.state.error_code = "invalid_request"
        message = describe_validation_errors(exc.errors())
        return with_detail(request, error_response(422, message, "invalid_request"),
                           error_body(422, message, "invalid_request"), jsonable_encoder(exc.errors()))

"""Every error the miner answers, in OpenAI's shape: ``{"error": {"message", "type", "code"}}``.

Routes and backends raise :class:`MinerError` with the status it deserves;
the handlers below turn it, ``HTTPException`` (what the signature check
raises, and routing's 404 and 405) and body validation errors into that JSON.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException  # FastAPI's is a subclass; routing raises this one (404, 405)

# status → (type, code) for errors raised without their own.
DEFAULT_KINDS = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "invalid_signature"),
    403: ("permission_error", "not_a_permitted_validator"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "body_too_large"),
    422: ("invalid_request_error", "invalid_body"),
    500: ("server_error", "internal_error"),
    502: ("upstream_error", "upstream_failed"),
}


class MinerError(Exception):
    """A request the miner refuses or cannot finish; ``message`` is safe to send back."""

    def __init__(self, status: int, message: str, *, type: str = "", code: str = ""):
        super().__init__(message)
        default_type, default_code = DEFAULT_KINDS.get(status, ("server_error", "error"))
        self.status = status
        self.message = message
        self.type = type or default_type
        self.code = code or default_code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}


def error_response(error: MinerError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


async def _miner_error(request: Request, exc: MinerError) -> JSONResponse:
    return error_response(exc)


async def _http_exception(request: Request, exc: HTTPException) -> JSONResponse:
    response = error_response(MinerError(exc.status_code, str(exc.detail)))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(MinerError(422, describe_validation_errors(exc.errors())))


def describe_validation_errors(errors: Any) -> str:
    """Pydantic's error list as one readable line: ``messages: Field required; n: …``."""
    parts = []
    for error in list(errors)[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request body: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MinerError, _miner_error)
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)

"""``POST /v1/chat/completions`` straight from the server, before FastAPI's stack.

    app = GatewayApp(...)            # a FastAPI app; its chat requests go to ``serve_chat`` here

Almost every request a gateway sees is a chat completion, and on that route
FastAPI's layers (middleware send-wrappers, dependency injection, body
validation through a generic adapter, a task group per streamed response)
cost a quarter of the worker's CPU. Here the same steps run as plain calls:
the meter, admission (``access.admit``), the body parsed by pydantic-core from
the raw bytes, the chat core (``api.chat.answer``), then the response sent
with one wrapper that does what ``MeterMiddleware`` and ``MetricsMiddleware``
do for the other routes. What the client sees is the same: the same errors in
OpenAI's shape, the same headers, the same stream.

A browser request (an ``Origin`` header while CORS is configured) takes the
ordinary FastAPI route, so CORS answers it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Optional

import orjson
from loguru import logger
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from shared.asgi import BodyTooLarge, ClientGone, DisconnectWatch, read_body

from .access import admit
from .chat import Outcome, answer, chat_response, chat_sse
from .errors import ApiError, describe_validation_errors, error_response
from .meter import Meter, metered, settle
from .responses import SSE_DONE
from .schemas import ChatCompletionRequest

if TYPE_CHECKING:
    from .gateway import Gateway

ROUTE = "/v1/chat/completions"


def takes_hot_path(scope: dict, cors: bool) -> bool:
    if scope["type"] != "http" or scope["path"] != ROUTE or scope["method"] != "POST":
        return False
    return not cors or not any(name == b"origin" for name, _ in scope["headers"])


async def stream_until_disconnect(status: int, headers: list, iterator: Any, receive: Any, send: Any) -> None:
    """Send a stream's head and chunks; if the client goes away, close the stream (its miners stop too).

    A disconnect watch (``shared.asgi.DisconnectWatch``) instead of Starlette's task group per response.
    The piece that ends with ``[DONE]`` ends the body too: one write, not two.
    """
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        with DisconnectWatch(receive) as watch:
            try:
                ended = False
                async for chunk in iterator:
                    ended = chunk.endswith(SSE_DONE)
                    await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
                if not ended:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            except asyncio.CancelledError:
                if not watch.fired:
                    raise
                asyncio.current_task().uncancel()  # the cancellation was the watch's, and it has done its job
    finally:
        await iterator.aclose()


def stream_head(outcome: Outcome) -> list[tuple[bytes, bytes]]:
    """The head ``chat_response`` gives a stream (Starlette's ``StreamingResponse``: its headers in the order
    given, then the media type with its charset), without building the response object."""
    return [(b"cache-control", b"no-cache"), (b"x-request-id", outcome.request_id.encode("latin-1")),
            (b"content-type", b"text/event-stream; charset=utf-8")]


async def send_completion(outcome: Outcome, send: Any) -> None:
    """A whole chat completion: the bytes and headers ``chat_response`` gives (``FastJSONResponse``: the
    request id, then content-length and content-type, as Starlette orders them), in two messages."""
    body = orjson.dumps(outcome.completion)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"x-request-id", outcome.request_id.encode("latin-1")),
                            (b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def serve_chat(app: Any, scope: dict, receive: Any, send: Any) -> None:
    gateway = app.state.gateway
    meter = Meter(ROUTE)
    scope["app"] = app
    scope.setdefault("state", {})["meter"] = meter
    metered_send = metered(meter, send, receive, gateway)
    error_code: Optional[str] = None

    request = Request(scope, receive)
    response: Optional[Response] = None
    streamed: Optional[Outcome] = None
    try:
        try:
            try:
                raw = await read_body(receive, max_body := gateway.settings.max_body_chat)
            except ClientGone:
                raw = b""  # nobody will read the answer; it goes through the usual checks all the same
            key = await admit(request)
            try:
                body = ChatCompletionRequest.model_validate_json(raw)
            except ValidationError as exc:
                raise ApiError(422, describe_validation_errors(exc.errors()), "invalid_request") from None
            outcome = await answer(gateway, key, body, meter)
            if outcome.completion is not None:  # a whole answer: sent as chat_response would, without its object
                await send_completion(outcome, metered_send)
                return
            if outcome.events is not None:  # a stream: likewise (sent below, outside these error answers)
                streamed = outcome
            else:
                response = chat_response(outcome)
        except BodyTooLarge:
            error_code = "request_too_large"
            response = error_response(413, f"request body larger than {max_body} bytes", error_code)
        except ApiError as exc:
            error_code = exc.code
            response = error_response(exc.status, exc.message, exc.code, exc.headers)
        if streamed is not None:
            await stream_until_disconnect(200, stream_head(streamed), chat_sse(streamed), receive, metered_send)
        else:
            await response(scope, receive, metered_send)
    except Exception:
        logger.exception("chat completion failed")
        if meter.first_byte is None:
            error_code = "internal_error"
            await error_response(500, "internal error", error_code)(scope, receive, metered_send)
    finally:
        # Settled on the loop's next turn: the response's bytes are written at the end of this one
        # (``shared.coalesced_writes``), and metering, refunds and logs should not hold them back.
        asyncio.get_running_loop().call_soon(wrap_up, meter, gateway, time.perf_counter() - meter.started, error_code)


def wrap_up(meter: Meter, gateway: Gateway, seconds: float, error_code: Optional[str]) -> None:
    if meter.key is not None:
        settle(meter, gateway)
    first_byte = None if meter.first_byte is None else meter.first_byte - meter.started
    gateway.metrics.observe_http("POST", ROUTE, meter.status or 500, seconds, first_byte, error_code)

"""Server-sent events, and a streaming response that can cut its connection on purpose.

::

    yield sse({"choices": [...]})     # b'data: {...}\\n\\n'
    yield DONE                        # b'data: [DONE]\\n\\n'
    raise CutConnection()             # from the body iterator: the client sees the stream die

A ``StreamingResponse`` whose iterator raises lets the exception escape into
the server, which logs a traceback. ``EventStreamResponse`` instead returns
without finishing the body, so uvicorn closes the socket mid-chunk and the
client gets a truncated transfer, as from a miner that crashed mid-answer.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Send

DONE = b"data: [DONE]\n\n"


class CutConnection(Exception):
    """Raised by a body iterator to end the response without completing it."""


def sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(self, content: Any, status_code: int = 200):
        super().__init__(content, status_code, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except CutConnection:
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

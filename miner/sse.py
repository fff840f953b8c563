"""Server-sent events, and how a behaviour ends a stream on purpose.

::

    yield sse({"choices": [...]})     # b'data: {...}\\n\\n'
    yield DONE                        # b'data: [DONE]\\n\\n'
    raise CutConnection()             # from a stream: the client sees it die

The chat endpoint (``miner.chat``) answers ``CutConnection`` by returning
without finishing the body, so uvicorn closes the socket mid-chunk and the
client gets a truncated transfer, as from a miner that crashed mid-answer.
"""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


class CutConnection(Exception):
    """Raised by a stream to end the response without completing it."""


def sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"

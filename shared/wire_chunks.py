"""A streamed chat answer's events, decoded into typed objects that carry only what is read of them.

    chunk = decode_event(data)     # the JSON after ``data:``; a ``WireChunk``, else a dict, else StreamBroken

Every chunk of every streamed answer is decoded, in the API worker (the race's calls, the relay) and in the
validator (synthetic rounds). ``orjson.loads`` builds a dict for each of a chunk's objects, every field
included (its id, object, created, system fingerprint…), and the checks then ask each dict for its parts
and their types. msgspec's decoder builds one small object per JSON object, with just the fields below,
and checks their types as it reads: a 20-chunk answer costs its reader about a third fewer instructions
(docs/performance.md, round 14).

The types say what a well-formed chunk has. A chunk they do not fit is not yet a broken one: OpenAI's
rules (``shared.chat_stream.StreamRecord.take``) tolerate some parts that are present but empty in odd
ways (a ``false`` finish reason, a ``0`` content), and tell what is wrong with the rest. Such a chunk
is decoded again as a dict and takes that way, so both ways accept the same chunks with the same result
(tests/test_wire_chunks.py compares them on generated chunks). So do bytes msgspec cannot decode at all
(invalid UTF-8 in a part that is read, nesting past its depth): orjson then says they are unparsable, as it
always did. One difference is left: msgspec skips the fields nobody reads without checking their UTF-8, so a
chunk with an invalid byte only there is taken (nothing of those fields reaches a client or the validator).
"""

from __future__ import annotations

from typing import Any, Optional, Union

import msgspec
import orjson


class StreamBroken(Exception):
    """The miner broke the protocol: an error event, garbage, or no ``[DONE]``."""


class WireDelta(msgspec.Struct):
    role: Any = None  # compared with "assistant", whatever it is
    content: Optional[str] = None


class WireChoice(msgspec.Struct):
    index: int = 0
    delta: Optional[WireDelta] = None
    finish_reason: Optional[str] = None


class WireChunk(msgspec.Struct):
    model: Optional[str] = None
    usage: Optional[dict] = None
    choices: Optional[list[WireChoice]] = None
    error: Any = msgspec.UNSET  # present at all (even null): the miner's error event


_DECODER = msgspec.json.Decoder(WireChunk)
# Whatever a typed decoder refuses, orjson then decides, as it did before: not only the types (ValidationError) and
# JSON (DecodeError), but invalid UTF-8 in a string (msgspec raises UnicodeDecodeError, orjson its JSONDecodeError)
# and nesting past the interpreter's recursion limit (RecursionError; orjson stops at 1,024 levels). Any exception:
# a miner's bytes must never raise anything but StreamBroken out of ``decode_event``.
DOES_NOT_FIT = Exception


def decode_event(data: bytes) -> Union[WireChunk, dict]:
    """One event's JSON: a ``WireChunk`` when it fits the types, else the dict ``parse_event`` gives (or its
    ``StreamBroken``: not JSON, not an object, an error event)."""
    try:
        chunk = _DECODER.decode(data)
    except DOES_NOT_FIT:
        return parse_event(data)
    if chunk.error is not msgspec.UNSET:
        return parse_event(data)  # raises, with the miner's message
    return chunk


def parse_event(data: bytes) -> dict:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise StreamBroken("unparsable chunk") from None
    if not isinstance(chunk, dict):
        raise StreamBroken("chunk is not a JSON object")
    if "error" in chunk:
        error = chunk["error"]
        raise StreamBroken(error.get("message", str(error)) if isinstance(error, dict) else str(error))
    return chunk

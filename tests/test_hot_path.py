"""The chat route served before FastAPI's stack (``api.hot_path``) answers like any other route.

Bad bodies get OpenAI's error shape and cost nothing; an oversized body is
refused with 413 and the worker goes on serving; the key is checked before
the body is looked at.
"""

from __future__ import annotations

import asyncio

import aiohttp
import gateway_client as gw
import orjson


async def new_key(net, credits: int) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.post(net.api_url + f"/api_management/create-api-key/?credits={credits}",
                                headers={"admin-key": net.admin_key}) as response:
            return (await response.json())["api_key"]


async def post_raw(net, key: str, data: bytes) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(net.api_url + "/v1/chat/completions", data=data,
                                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}) as r:
            return r.status, dict(r.headers), await r.json(content_type=None)


async def credits_left(net, key: str) -> int:
    return (await gw.call("GET", net.api_url + "/v1/credits", headers={"Authorization": f"Bearer {key}"})).body[
        "credits"]


async def test_unparsable_and_invalid_bodies_are_422_and_free(local_subnet):
    key = await new_key(local_subnet, 5)
    status, _, body = await post_raw(local_subnet, key, b'{"messages": [')
    assert status == 422 and body["error"]["type"] == "invalid_request_error"
    assert "Invalid JSON" in body["error"]["message"] and body["error"]["code"] == "invalid_request"
    status, _, body = await post_raw(local_subnet, key, b'{"messages": [], "temperature": 9}')
    assert status == 422
    assert "messages" in body["error"]["message"] and "temperature" in body["error"]["message"]
    assert await credits_left(local_subnet, key) == 5


async def test_the_key_is_checked_before_the_body(local_subnet):
    status, _, body = await post_raw(local_subnet, "sk-sn-not-a-key", b"not json at all")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


async def test_an_oversized_body_is_413_and_the_worker_keeps_serving(local_subnet, api_key):
    huge = b'{"messages": [{"role": "user", "content": "' + b"x" * (9 * 1024 * 1024) + b'"}]}'
    status, _, body = await post_raw(local_subnet, api_key, huge)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    answer = await gw.chat(local_subnet.api_url, api_key)
    assert answer.status == 200 and answer.headers["X-Request-Id"].startswith("chatcmpl-")
    assert answer.body["choices"][0]["message"]["content"]


async def raw_chat(net, key: str, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, list[str]]:
    """A chat request sent on a raw socket; the reader, the writer and the answer's head, line by line."""
    host, port = net.api_url.split("//")[1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (key.encode(), len(body), body))
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode("latin-1").split("\r\n")
    return reader, writer, head


def own_header_names(head: list[str]) -> list[str]:
    """The head's header names, in order, without the server's own and the rate-limit headers."""
    names = [line.split(":", 1)[0] for line in head[1:] if line]
    return [name for name in names if name not in ("date", "server") and not name.startswith("x-ratelimit")]


async def test_a_whole_answer_has_the_head_a_json_response_has(local_subnet, api_key):
    """The fast path writes a whole answer itself: the head is what ``FastJSONResponse`` gave (the request id,
    then the length and type as Starlette orders them), with the rate-limit headers after, and the body is
    the completion with that id."""
    reader, writer, head = await raw_chat(local_subnet, api_key, b'{"messages": [{"role": "user", "content": "hi"}]}')
    assert head[0] == "HTTP/1.1 200 OK"
    assert own_header_names(head) == ["x-request-id", "content-length", "content-type"], head
    fields = dict(line.split(": ", 1) for line in head[1:] if line)
    assert fields["content-type"] == "application/json" and fields["x-request-id"].startswith("chatcmpl-")
    answer = orjson.loads(await asyncio.wait_for(reader.readexactly(int(fields["content-length"])), 30))
    writer.close()
    assert answer["id"] == fields["x-request-id"] and answer["choices"][0]["message"]["content"]


async def test_a_stream_has_the_head_a_streaming_response_has(local_subnet, api_key):
    """The fast path writes a stream's head itself: the same headers, in the same order, as the
    ``StreamingResponse`` that ``chat_response`` builds for it (rate-limit headers after), then the events."""
    from api.chat import Outcome, chat_response
    from api.hot_path import stream_head

    async def no_events():
        yield []

    built = chat_response(Outcome("chatcmpl-x", created=0, events=no_events()))
    assert stream_head(Outcome("chatcmpl-x", created=0, events=no_events())) == built.raw_headers

    reader, writer, head = await raw_chat(local_subnet, api_key,
                                          b'{"messages": [{"role": "user", "content": "hi"}], "stream": true}')
    assert head[0] == "HTTP/1.1 200 OK"
    assert own_header_names(head) == ["cache-control", "x-request-id", "content-type", "transfer-encoding"], head
    fields = dict(line.split(": ", 1) for line in head[1:] if line)
    assert fields["content-type"] == "text/event-stream; charset=utf-8" and fields["cache-control"] == "no-cache"
    text = b""
    while not text.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"):
        text += await asyncio.wait_for(reader.read(65536), 30)
    writer.close()
    first = orjson.loads(text.split(b"data: ", 1)[1].split(b"\n\n", 1)[0])
    assert first["id"] == fields["x-request-id"] and first["object"] == "chat.completion.chunk"

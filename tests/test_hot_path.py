"""The chat route served before FastAPI's stack (``api.hot_path``) answers like any other route.

Bad bodies get OpenAI's error shape and cost nothing; an oversized body is
refused with 413 and the worker goes on serving; the key is checked before
the body is looked at.
"""

from __future__ import annotations

import aiohttp
import gateway_client as gw


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

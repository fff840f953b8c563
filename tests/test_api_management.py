"""``/api_management``: the admin key creates, modifies and deletes keys; keys are stored hashed."""

from __future__ import annotations

import sqlite3

import aiohttp
import openai
import pytest
from openai import OpenAI

MESSAGES = [{"role": "user", "content": "hi"}]


async def admin(net, method: str, path: str, key: str | None = None) -> tuple[int, dict]:
    headers = {"admin-key": key if key is not None else net.admin_key}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, net.api_url + "/api_management" + path, headers=headers) as response:
            return response.status, await response.json()


def chat_works(net, key: str) -> bool:
    client = OpenAI(base_url=net.api_url + "/v1", api_key=key, max_retries=0)
    try:
        client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=3)
        return True
    except openai.AuthenticationError:
        return False


async def test_key_lifecycle(local_subnet):
    status, created = await admin(local_subnet, "POST", "/create-api-key/?rate_limit=5&name=alice")
    assert status == 200 and created["message"] == "API key created"
    key = created["api_key"]
    assert chat_works(local_subnet, key)

    status, answer = await admin(local_subnet, "PUT", f"/modify-api-key/{key}?enabled=false")
    assert (status, answer["message"]) == (200, "API key modified")
    assert not chat_works(local_subnet, key)
    await admin(local_subnet, "PUT", f"/modify-api-key/{key}?enabled=true&rate_limit=9")
    assert chat_works(local_subnet, key)

    status, answer = await admin(local_subnet, "DELETE", f"/delete-api-key/{key}")
    assert (status, answer["message"]) == (200, "API key deleted")
    assert not chat_works(local_subnet, key)
    status, answer = await admin(local_subnet, "DELETE", f"/delete-api-key/{key}")
    assert status == 404 and answer["error"]["message"] == "API key not found"


@pytest.mark.parametrize("wrong", ["", "admin-wrong"])
async def test_wrong_admin_key_is_refused(local_subnet, wrong):
    status, answer = await admin(local_subnet, "POST", "/create-api-key/", key=wrong)
    assert status == 403 and answer["error"]["message"] == "Invalid admin key"


async def test_keys_are_not_readable_from_the_store(local_subnet):
    _, created = await admin(local_subnet, "POST", "/create-api-key/?name=hidden")
    key = created["api_key"]
    database = local_subnet.directory / "data" / "api" / "api.sqlite"
    dump = "\n".join(sqlite3.connect(database).iterdump())
    assert key not in dump
    assert key[-12:] not in dump

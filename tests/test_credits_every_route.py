"""Credits are kept by every answered route (one per unit of miner work, see api.admission) and given back
when nothing was answered."""

from __future__ import annotations

import aiohttp
from openai import OpenAI


async def call(net, method: str, path: str, key: str, **kwargs) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, net.api_url + path, headers={"Authorization": f"Bearer {key}"},
                                   **kwargs) as response:
            return response.status, await response.json()


async def credits_left(net, key: str) -> int:
    status, body = await call(net, "GET", "/v1/credits", key)
    assert status == 200
    return body["credits"]


async def test_each_answered_route_costs_its_units(local_subnet):
    async with aiohttp.ClientSession() as session:
        async with session.post(local_subnet.api_url + "/api_management/create-api-key/?credits=10",
                                headers={"admin-key": local_subnet.admin_key}) as response:
            key = (await response.json())["api_key"]
    assert await credits_left(local_subnet, key) == 10

    status, found = await call(local_subnet, "POST", "/web_retrieval", key,
                               json={"search_query": "honey bees dance", "n_miners": 2, "n_results": 1})
    assert status == 200 and found["results"]
    assert await credits_left(local_subnet, key) == 8  # two miners asked: two units

    client = OpenAI(base_url=local_subnet.api_url + "/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model="default", messages=[{"role": "user", "content": "think"}],
                                   extra_body={"test_time_inference": True})
    assert await credits_left(local_subnet, key) == 3  # REASONING_MAX_STEPS (4) steps and the answer: 5 units

    status, _ = await call(local_subnet, "POST", "/v1/chat/completions", key,
                           json={"messages": [{"role": "user", "content": "x"}], "task": "ProgrammingTask"})
    assert status == 503  # no miner serves it: nothing answered, nothing kept
    assert await credits_left(local_subnet, key) == 3

"""The pieces under issue 12's API rules, on real stores: weighted rate-limit hits, units, client addresses."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from store_fixtures import drop_redis_prefix, unique_name

from api.admission import chat_units, retrieval_units
from api.ratelimit import RedisRateLimiter, Window
from api.schemas import ChatCompletionRequest
from api.store import open_store
from api.throttle import client_address, parse_networks
from api.web_retrieval import WebRetrievalQuery

WINDOWS = [Window(10, 60), Window(12, 3600)]


async def weighted_hits(hit) -> None:
    """A request of ``weight`` units takes that many slots in every window, or none at all."""
    first = await hit(weight=7)
    assert first.allowed and [s.used for s in first.states] == [7, 7]
    refused = await hit(weight=4)
    assert not refused.allowed and [s.used for s in refused.states] == [7, 7]
    assert 50 < refused.retry_after <= 60  # once the 7 leave the minute window
    fits = await hit(weight=3)
    assert fits.allowed and [s.used for s in fits.states] == [10, 10]
    never = await hit(weight=11)  # larger than the window itself
    assert not never.allowed and never.retry_after >= 59


async def test_weighted_hits_in_the_store(database):
    store = await open_store(*database)
    try:
        await weighted_hits(lambda weight: store.rate_hit("key_w", WINDOWS, weight=weight))
        # concurrent weighted hits never pass the limit together
        decisions = await asyncio.gather(*(store.rate_hit("key_c", WINDOWS, weight=3) for _ in range(8)))
        assert sum(d.allowed for d in decisions) == 3
    finally:
        await store.close()


async def test_weighted_hits_in_redis(redis_url):
    prefix = unique_name("test") + ":"
    limiter = RedisRateLimiter(redis_url, prefix)
    try:
        await weighted_hits(lambda weight: limiter.hit("key_w", WINDOWS, weight=weight))
        decisions = await asyncio.gather(*(limiter.hit("key_c", WINDOWS, weight=3) for _ in range(8)))
        assert sum(d.allowed for d in decisions) == 3
        assert (await limiter.hit("key_one", WINDOWS)).states[0].used == 1  # the default weight is one
    finally:
        await limiter.close()
        drop_redis_prefix(redis_url, prefix)


SETTINGS = SimpleNamespace(fanout=3, mixture_size=3, reasoning_max_steps=4)


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}], **fields})


def test_units_follow_the_work_asked_for():
    assert chat_units(chat(), 0, SETTINGS) == 1
    assert chat_units(chat(n=4), 0, SETTINGS) == 4
    assert chat_units(chat(uids=[1, 2, 3]), 3, SETTINGS) == 1  # no wider than the gateway's own race
    assert chat_units(chat(uids=list(range(10))), 10, SETTINGS) == 4  # ceil(10 / 3) races
    assert chat_units(chat(top_n=256, n=2), 40, SETTINGS) == 2 * 14
    assert chat_units(chat(mixture=True), 0, SETTINGS) == 3 + 1
    assert chat_units(chat(mixture=True), 0, SETTINGS, available=2) == 2 + 1  # a first round of two
    assert chat_units(chat(mixture=True, uids=list(range(20)), n=2), 20, SETTINGS) == 8 + 2
    assert chat_units(chat(test_time_inference=True), 0, SETTINGS) == 4 + 1
    assert chat_units(chat(inference_mode="Chain-of-Thought", n=3), 6, SETTINGS) == (4 + 3) * 2
    assert retrieval_units(WebRetrievalQuery(search_query="bees")) == 3
    assert retrieval_units(WebRetrievalQuery(search_query="bees", n_miners=9)) == 9
    assert retrieval_units(WebRetrievalQuery(search_query="bees", uids=[4, 5])) == 2


def scope(peer: str, forwarded: str | None = None) -> dict:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"client": (peer, 40000), "headers": headers}


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    none = parse_networks("")
    proxies = parse_networks("10.0.0.0/8, 127.0.0.2")
    assert client_address(scope("127.0.0.1", "1.2.3.4"), none) == "127.0.0.1"
    assert client_address(scope("203.0.113.9", "1.2.3.4"), proxies) == "203.0.113.9"  # not a proxy of ours
    assert client_address(scope("127.0.0.2", "1.2.3.4"), proxies) == "1.2.3.4"
    # what the client wrote to the left of the proxy's own entry is not believed
    assert client_address(scope("127.0.0.2", "6.6.6.6, 1.2.3.4"), proxies) == "1.2.3.4"
    # a chain of our own proxies: the first address that is not one of them
    assert client_address(scope("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.7"), proxies) == "1.2.3.4"
    assert client_address(scope("127.0.0.2", "garbage, 10.0.0.7"), proxies) == "10.0.0.7"
    assert client_address(scope("127.0.0.2"), proxies) == "127.0.0.2"  # no header: the proxy itself

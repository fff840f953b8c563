"""What miners answered reaches the validator, attributed to the right uids, once."""

from __future__ import annotations

import asyncio
import time

import pytest
from openai import OpenAI

from api.forwarder import REFUSED, ScoringForwarder
from shared.schemas import MinerChatRequest, MinerResponse, ScoringItem
from shared.signed_http import SignedCallError, SignedClient

MESSAGES = [{"role": "user", "content": "What does the validator score?"}]


async def wait_for_item(net, signer, request_id: str, timeout: float = 10.0) -> dict:
    client = SignedClient(signer)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return await client.get_json(net.validator_url, f"/scoring/items/{request_id}",
                                             receiver=signer.hotkey)
            except SignedCallError as exc:
                assert exc.status == 404, exc
            await asyncio.sleep(0.2)
    finally:
        await client.close()
    raise AssertionError(f"{request_id} never reached the validator")


async def test_every_queried_miner_is_forwarded_with_its_uid(local_subnet, api_key, signer_for):
    good = local_subnet.member("miner", "good")
    noisy = local_subnet.member("miner", "noisy")
    client = OpenAI(base_url=local_subnet.api_url + "/v1", api_key=api_key, max_retries=0)
    completion = await asyncio.to_thread(
        client.chat.completions.create, model="default", messages=MESSAGES,
        extra_body={"uids": [good.uid, noisy.uid], "seed": 11})

    item = await wait_for_item(local_subnet, signer_for(local_subnet, "validator"), completion.id)
    assert item["source"] == "organic"
    assert item["request"]["seed"] == 11
    by_uid = {r["uid"]: r for r in item["responses"]}
    assert set(by_uid) == {good.uid, noisy.uid}
    assert by_uid[good.uid]["hotkey"] == good.hotkey and by_uid[noisy.uid]["hotkey"] == noisy.hotkey
    assert all(r["status"] == "ok" for r in by_uid.values())
    winner = by_uid[completion.miner_uid]
    assert "".join(winner["chunks"]) == completion.choices[0].message.content
    assert "".join(by_uid[good.uid]["chunks"]) != "".join(by_uid[noisy.uid]["chunks"])
    assert len(winner["timings"]) == len(winner["chunks"])


async def test_streamed_requests_are_forwarded_too(local_subnet, api_key, signer_for):
    good = local_subnet.member("miner", "good")
    client = OpenAI(base_url=local_subnet.api_url + "/v1", api_key=api_key, max_retries=0)

    def stream() -> tuple[str, str]:
        chunks = list(client.chat.completions.create(model="default", messages=MESSAGES, stream=True,
                                                     extra_body={"uids": [good.uid]}))
        return chunks[0].id, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    request_id, text = await asyncio.to_thread(stream)
    item = await wait_for_item(local_subnet, signer_for(local_subnet, "validator"), request_id)
    assert [r["uid"] for r in item["responses"]] == [good.uid]
    assert "".join(item["responses"][0]["chunks"]) == text


async def test_a_batch_sent_twice_is_stored_once(local_subnet, signer_for):
    signer = signer_for(local_subnet, "validator")
    good = local_subnet.member("miner", "good")
    batch = {"items": [{
        "request_id": "resent-once", "source": "organic", "task": "InferenceTask", "created_at": time.time(),
        "request": {"messages": [{"role": "user", "content": "x"}], "seed": 1},
        "responses": [{"uid": good.uid, "hotkey": good.hotkey, "status": "ok", "chunks": ["a "], "timings": [0.1]}],
    }]}
    client = SignedClient(signer)
    try:
        first = await client.post_json(local_subnet.validator_url, "/scoring", batch, receiver=signer.hotkey)
        second = await client.post_json(local_subnet.validator_url, "/scoring", batch, receiver=signer.hotkey)
    finally:
        await client.close()
    assert (first["accepted"], first["duplicates"]) == (1, 0)
    assert (second["accepted"], second["duplicates"]) == (0, 1)


# -- the forwarder against what the validator refuses ---------------------------------------------------------------

def scoring_item(request_id: str, miner, *, text: str = "a ") -> ScoringItem:
    """An organic item as the API builds it (``model_construct``: the validator is the one that validates)."""
    return ScoringItem.model_construct(
        request_id=request_id, source="organic", task="InferenceTask", created_at=time.time(),
        request=MinerChatRequest.model_validate({"messages": [{"role": "user", "content": "x"}], "seed": 1}),
        responses=[MinerResponse(uid=miner.uid, hotkey=miner.hotkey, status="ok", chunks=[text], timings=[0.1])],
        key_id=None, search_query=None, n_results=None)


def forwarder_for(net, signer, **settings) -> ScoringForwarder:
    return ScoringForwarder(SignedClient(signer), net.validator_url, net.member("validator").hotkey,
                            **{"batch_size": 256, "interval": 0.5, "max_buffer": 1000, **settings})


async def test_an_item_the_validator_refuses_is_dropped_alone(local_subnet, signer_for):
    """One malformed item (a request id longer than the validator takes) used to make its whole batch fail
    and be retried forever, blocking every item queued behind it."""
    signer = signer_for(local_subnet, "validator")
    good = local_subnet.member("miner", "good")
    ids = [f"refusal-{time.time_ns()}-{i}" for i in range(10)]
    poison = "p" * 200
    forwarder = forwarder_for(local_subnet, signer)
    try:
        for position, request_id in enumerate(ids):
            forwarder.submit(scoring_item(request_id, good))
            if position == 3:
                forwarder.submit(scoring_item(poison, good))
        assert await forwarder.flush_once() == 11
        assert (forwarder.sent, forwarder.dropped, len(forwarder.buffer)) == (10, 1, 0)
        assert forwarder.posts > 2  # the refused POST was halved until the bad item stood alone
    finally:
        await forwarder.client.close()
    for request_id in ids:
        assert (await wait_for_item(local_subnet, signer, request_id))["request_id"] == request_id


async def test_a_batch_of_big_items_goes_in_parts_under_the_byte_cap(local_subnet, signer_for):
    signer = signer_for(local_subnet, "validator")
    good = local_subnet.member("miner", "good")
    ids = [f"parts-{time.time_ns()}-{i}" for i in range(6)]
    items = [scoring_item(request_id, good, text="word " * 250) for request_id in ids]
    size = max(len(item.model_dump_json()) for item in items)
    forwarder = forwarder_for(local_subnet, signer, max_bytes=2 * size + 1)  # two items a POST, not three
    try:
        for item in items:
            forwarder.submit(item)
        await forwarder.flush_once()
        assert (forwarder.sent, forwarder.dropped, forwarder.posts) == (6, 0, 3)
    finally:
        await forwarder.client.close()
    for request_id in ids:
        item = await wait_for_item(local_subnet, signer, request_id)
        assert item["responses"][0]["chunks"] == ["word " * 250]


async def test_a_batch_refused_for_other_reasons_is_kept_for_a_retry(local_subnet, signer_for):
    """Not malformed: refused because of who signed it, or nobody there. Dropping it would lose good items."""
    good = local_subnet.member("miner", "good")
    for forwarder in (forwarder_for(local_subnet, signer_for(local_subnet, "miner", "good")),  # not allowed to post
                      ScoringForwarder(SignedClient(signer_for(local_subnet, "validator")), "http://127.0.0.1:9",
                                       local_subnet.member("validator").hotkey, batch_size=256, interval=0.5,
                                       max_buffer=1000)):
        try:
            forwarder.submit(scoring_item(f"kept-{time.time_ns()}", good))
            with pytest.raises(SignedCallError) as refused:
                await forwarder.flush_once()
            assert refused.value.status not in REFUSED
            assert (forwarder.sent, forwarder.dropped, len(forwarder.buffer)) == (0, 0, 1)
        finally:
            await forwarder.client.close()

"""What miners answered reaches the validator, attributed to the right uids, once."""

from __future__ import annotations

import asyncio
import time

from openai import OpenAI

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

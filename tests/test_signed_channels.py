"""Every internal hop is btauth/1: unsigned, replayed, tampered or misaddressed calls are refused.

Real processes of the local subnet; requests sent with aiohttp exactly as bytes.
"""

from __future__ import annotations

import json

import aiohttp
import pytest

CHAT = {"messages": [{"role": "user", "content": "hello"}], "stream": False, "seed": 1}


def targets(net):
    """(name, base url, receiver hotkey, method, path, body) for a miner and for the validator."""
    miner = net.member("miner", "good")
    body = json.dumps(CHAT).encode()
    return {
        "miner": (f"http://{miner.axon}", miner.hotkey, "POST", "/v1/chat/completions", body),
        "validator": (net.validator_url, net.member("validator").hotkey, "GET", "/directory", b""),
    }


async def send(url: str, method: str, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url + path, data=body or None,
                                   headers={**headers, "Content-Type": "application/json"}) as response:
            return response.status, await response.json(content_type=None)


def message(payload: dict) -> str:
    if "error" in payload:
        return payload["error"]["message"]
    return payload.get("detail", "")


@pytest.mark.parametrize("target", ["miner", "validator"])
async def test_signed_call_is_accepted_then_replay_refused(local_subnet, signer_for, target):
    url, receiver, method, path, body = targets(local_subnet)[target]
    headers = signer_for(local_subnet, "validator").headers(method, path, body, receiver=receiver)
    status, _ = await send(url, method, path, body, headers)
    assert status == 200
    status, payload = await send(url, method, path, body, headers)
    assert status == 401 and "ReplayedRequest" in message(payload)


@pytest.mark.parametrize("target", ["miner", "validator"])
async def test_unsigned_call_is_401(local_subnet, signer_for, target):
    url, _, method, path, body = targets(local_subnet)[target]
    status, payload = await send(url, method, path, body, {})
    assert status == 401 and "MalformedAuth" in message(payload)


@pytest.mark.parametrize("target", ["miner", "validator"])
async def test_tampered_call_is_401(local_subnet, signer_for, target):
    url, receiver, method, path, body = targets(local_subnet)[target]
    signer = signer_for(local_subnet, "validator")
    if body:
        headers = signer.headers(method, path, body, receiver=receiver)
        tampered = body.replace(b"hello", b"HELLO")
        status, payload = await send(url, method, path, tampered, headers)
    else:
        headers = signer.headers(method, path + "?x=1", body, receiver=receiver)
        status, payload = await send(url, method, path, body, headers)
    assert status == 401 and "BadSignature" in message(payload)


@pytest.mark.parametrize("target", ["miner", "validator"])
async def test_call_signed_for_another_receiver_is_401(local_subnet, signer_for, target):
    url, _, method, path, body = targets(local_subnet)[target]
    other = local_subnet.member("miner", "noisy").hotkey
    headers = signer_for(local_subnet, "validator").headers(method, path, body, receiver=other)
    status, payload = await send(url, method, path, body, headers)
    assert status == 401 and "WrongReceiver" in message(payload)


@pytest.mark.parametrize("target", ["miner", "validator"])
async def test_valid_signature_from_a_non_validator_is_403(local_subnet, signer_for, target):
    url, receiver, method, path, body = targets(local_subnet)[target]
    outsider = signer_for(local_subnet, "outsider")
    headers = outsider.headers(method, path, body, receiver=receiver)
    status, _ = await send(url, method, path, body, headers)
    assert status == 403


async def test_a_miner_cannot_call_the_validator(local_subnet, signer_for):
    signer = signer_for(local_subnet, "miner", "good")
    validator = local_subnet.member("validator").hotkey
    headers = signer.headers("GET", "/scoring/stats", b"", receiver=validator)
    status, _ = await send(local_subnet.validator_url, "GET", "/scoring/stats", b"", headers)
    assert status == 403

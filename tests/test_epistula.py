"""Epistula beside btauth/1: vectors derived here from the protocol's description, replay and freshness,
the reference miner accepting it, and the signer that picks the protocol per receiver.

The "subnet-style" headers below are built by hand, as the subnet's header generator describes them:
the message is sha256(body) in hex, the uuid, the timestamp in ms and the receiver, joined by ".",
signed with the sender's hotkey, sent as 0x-hex.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import pytest
import requests
from bittensor.http_auth import (
    BadSignature,
    InMemoryNonceStore,
    MalformedAuth,
    ReplayedRequest,
    StaleRequest,
    WrongReceiver,
)
from bittensor.sp_core import Keypair

from shared import epistula
from shared.auth import Signer

SENDER = Keypair.create_from_uri("//Alice")
RECEIVER = Keypair.create_from_uri("//Bob").ss58_address
BODY = b'{"messages": [{"role": "user", "content": "hi"}], "stream": false}'


def subnet_style_headers(keypair, body: bytes, receiver: str, timestamp: int, request_uuid: str) -> dict:
    """Written from the description, independently of shared.epistula."""
    signed = f"{hashlib.sha256(body).hexdigest()}.{request_uuid}.{timestamp}.{receiver}"
    return {
        "Epistula-Version": "2",
        "Epistula-Timestamp": str(timestamp),
        "Epistula-Uuid": request_uuid,
        "Epistula-Signed-By": keypair.ss58_address,
        "Epistula-Signed-For": receiver,
        "Epistula-Request-Signature": "0x" + keypair.sign(signed).hex(),
    }


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_fixed_vector():
    """The signed message for fixed inputs, spelled out."""
    body = b'{"a": 1}'
    digest = "f9d86028c6e0d64e225186f96acb69338b2c59764df79162107f5c4bb34d1310"  # printf %s | sha256sum
    assert hashlib.sha256(body).hexdigest() == digest
    assert epistula.message(body, "6f1c1c3e-8a76-4a6e-9d51-5b8e2f0e4a11", 1735689600000, RECEIVER) == (
        f"{digest}.6f1c1c3e-8a76-4a6e-9d51-5b8e2f0e4a11.1735689600000.{RECEIVER}").encode()
    headers = subnet_style_headers(SENDER, body, RECEIVER, 1735689600000, "6f1c1c3e-8a76-4a6e-9d51-5b8e2f0e4a11")
    caller = epistula.verify(headers, body, self_hotkey=RECEIVER, nonce_store=InMemoryNonceStore(),
                             now_ms=1735689600000 + 500)
    assert caller.hotkey_ss58 == SENDER.ss58_address


def test_subnet_style_headers_verify_and_ours_verify_by_hand():
    headers = subnet_style_headers(SENDER, BODY, RECEIVER, now_ms(), str(uuid.uuid4()))
    assert epistula.verify(headers, BODY, self_hotkey=RECEIVER,
                           nonce_store=InMemoryNonceStore()).hotkey_ss58 == SENDER.ss58_address

    ours = epistula.EpistulaSigner(SENDER).headers("POST", "/v1/chat/completions", BODY, receiver=RECEIVER)
    assert set(ours) == {"Epistula-Version", "Epistula-Timestamp", "Epistula-Uuid", "Epistula-Signed-By",
                         "Epistula-Signed-For", "Epistula-Request-Signature"}
    assert (ours["Epistula-Version"], ours["Epistula-Signed-By"], ours["Epistula-Signed-For"]) == (
        "2", SENDER.ss58_address, RECEIVER)
    assert abs(int(ours["Epistula-Timestamp"]) - now_ms()) < 60_000 and uuid.UUID(ours["Epistula-Uuid"])
    signed = (f"{hashlib.sha256(BODY).hexdigest()}.{ours['Epistula-Uuid']}.{ours['Epistula-Timestamp']}"
              f".{RECEIVER}").encode()
    assert Keypair(ss58_address=SENDER.ss58_address).verify(
        signed, bytes.fromhex(ours["Epistula-Request-Signature"][2:]))


def test_replay_freshness_receiver_tampering_and_malformed_headers():
    store = InMemoryNonceStore()
    headers = subnet_style_headers(SENDER, BODY, RECEIVER, now_ms(), str(uuid.uuid4()))
    epistula.verify(headers, BODY, self_hotkey=RECEIVER, nonce_store=store)
    with pytest.raises(ReplayedRequest):
        epistula.verify(headers, BODY, self_hotkey=RECEIVER, nonce_store=store)
    fresh_uuid = subnet_style_headers(SENDER, BODY, RECEIVER, int(headers["Epistula-Timestamp"]), str(uuid.uuid4()))
    epistula.verify(fresh_uuid, BODY, self_hotkey=RECEIVER, nonce_store=store)  # same ms, another uuid: fine

    stale = subnet_style_headers(SENDER, BODY, RECEIVER, now_ms() - 9_000, str(uuid.uuid4()))
    with pytest.raises(StaleRequest):
        epistula.verify(stale, BODY, self_hotkey=RECEIVER, nonce_store=store)
    ahead = subnet_style_headers(SENDER, BODY, RECEIVER, now_ms() + 5_000, str(uuid.uuid4()))
    with pytest.raises(StaleRequest):
        epistula.verify(ahead, BODY, self_hotkey=RECEIVER, nonce_store=store)
    elsewhere = subnet_style_headers(SENDER, BODY, SENDER.ss58_address, now_ms(), str(uuid.uuid4()))
    with pytest.raises(WrongReceiver):
        epistula.verify(elsewhere, BODY, self_hotkey=RECEIVER, nonce_store=store)
    honest = subnet_style_headers(SENDER, BODY, RECEIVER, now_ms(), str(uuid.uuid4()))
    with pytest.raises(BadSignature):
        epistula.verify(honest, BODY.replace(b"hi", b"ho"), self_hotkey=RECEIVER, nonce_store=store)
    epistula.verify(honest, BODY, self_hotkey=RECEIVER, nonce_store=store)  # a failed try did not burn its uuid
    claimed = {**subnet_style_headers(SENDER, BODY, RECEIVER, now_ms(), str(uuid.uuid4())),
               "Epistula-Signed-By": Keypair.create_from_uri("//Charlie").ss58_address}
    with pytest.raises(BadSignature):
        epistula.verify(claimed, BODY, self_hotkey=RECEIVER, nonce_store=store)
    for broken in ({"Epistula-Version": "1"}, {"Epistula-Timestamp": "soon"}, {"Epistula-Request-Signature": "0xzz"},
                   {"Epistula-Uuid": ""}):
        with pytest.raises(MalformedAuth):
            epistula.verify({**honest, **broken}, BODY, self_hotkey=RECEIVER, nonce_store=store)


def test_the_signer_speaks_epistula_to_miners_and_btauth_to_the_validator():
    validator = Keypair.create_from_uri("//Dave").ss58_address
    signer = epistula.signer_for("epistula", SENDER, frozenset({validator}))
    assert "Epistula-Request-Signature" in signer.headers("POST", "/v1/chat/completions", BODY, receiver=RECEIVER)
    assert "X-Bittensor-Signature" in signer.headers("POST", "/scoring", BODY, receiver=validator)
    assert isinstance(epistula.signer_for("btauth", SENDER), Signer)


def post_to_miner(net, miner, headers: dict, body: bytes) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{miner.port}/v1/chat/completions", data=body, timeout=10,
                         headers={**headers, "Content-Type": "application/json"})


def test_the_reference_miner_accepts_epistula_and_still_btauth(local_subnet, signer_for):
    validator = signer_for(local_subnet, "validator").keypair
    miner = local_subnet.member("miner", "good")
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": False,
                       "sampling_parameters": {"max_new_tokens": 3}}).encode()
    headers = subnet_style_headers(validator, body, miner.hotkey, now_ms(), str(uuid.uuid4()))
    answer = post_to_miner(local_subnet, miner, headers, body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    replayed = post_to_miner(local_subnet, miner, headers, body)
    assert replayed.status_code == 401 and "ReplayedRequest" in replayed.text
    stranger = Keypair.create_from_uri("//Eve")  # a valid signature from a hotkey without a validator permit
    refused = post_to_miner(local_subnet, miner, subnet_style_headers(stranger, body, miner.hotkey, now_ms(),
                                                                      str(uuid.uuid4())), body)
    assert refused.status_code == 403
    btauth = Signer(validator).headers("POST", "/v1/chat/completions", body, receiver=miner.hotkey)
    assert post_to_miner(local_subnet, miner, btauth, body).status_code == 200

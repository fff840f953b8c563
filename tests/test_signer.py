"""Our ``Signer`` signs the way ``bittensor.http_auth.sign`` does, without resolving the key per request."""

from __future__ import annotations

import bittensor as bt
import pytest
from bittensor import http_auth

from shared.auth import Signer

SENDER = bt.sp_core.Keypair.create_from_uri("//Alice")
RECEIVER = bt.sp_core.Keypair.create_from_uri("//Bob").ss58_address
BODY = b'{"messages": [{"role": "user", "content": "hi"}]}'


def test_headers_match_the_sdk_and_verify():
    ours = Signer(SENDER).headers("POST", "/v1/chat/completions?x=1", BODY, receiver=RECEIVER)
    sdk = http_auth.sign(SENDER, method="POST", path="/v1/chat/completions?x=1", body=BODY, receiver_ss58=RECEIVER,
                         nonce_ns=int(ours[http_auth.HEADER_NONCE]))
    # sr25519 signatures are randomised: everything else is byte-identical, and both verify
    assert {k: v for k, v in ours.items() if k != http_auth.HEADER_SIGNATURE} == \
        {k: v for k, v in sdk.items() if k != http_auth.HEADER_SIGNATURE}
    caller = http_auth.verify(ours, BODY, method="POST", path="/v1/chat/completions?x=1", self_hotkey_ss58=RECEIVER,
                              nonce_store=http_auth.InMemoryNonceStore())
    assert caller.hotkey_ss58 == SENDER.ss58_address


def test_a_changed_body_or_receiver_fails_verification():
    headers = Signer(SENDER).headers("POST", "/scoring", BODY, receiver=RECEIVER)
    with pytest.raises(http_auth.BadSignature):
        http_auth.verify(headers, BODY + b" ", method="POST", path="/scoring", self_hotkey_ss58=RECEIVER,
                         nonce_store=http_auth.InMemoryNonceStore())
    with pytest.raises(http_auth.WrongReceiver):
        http_auth.verify(headers, BODY, method="POST", path="/scoring", self_hotkey_ss58=SENDER.ss58_address,
                         nonce_store=http_auth.InMemoryNonceStore())


def test_nonces_never_repeat_within_a_process():
    signer = Signer(SENDER)
    nonces = [int(signer.headers("GET", "/directory", receiver=RECEIVER)[http_auth.HEADER_NONCE])
              for _ in range(200)]
    assert len(set(nonces)) == 200 and nonces == sorted(nonces)

"""Epistula (version 2): the signed-header protocol of the subnet's miners, beside ``btauth/1``.

Sender side (API worker or validator → a miner that speaks Epistula)::

    signer = EpistulaSigner(keypair)
    headers = signer.headers("POST", "/v1/chat/completions", body, receiver=miner_hotkey)

Receiver side (the reference miner accepts both protocols, see ``AnyProtocolVerifier``)::

    caller = verify(headers, body, self_hotkey=my_hotkey, nonce_store=store)   # or an EpistulaError

The signed message is ``f"{sha256(body).hexdigest()}.{uuid}.{timestamp}.{signed_for}"``
(timestamp in milliseconds since the epoch), signed by the sender's hotkey (sr25519), in
the headers ``Epistula-Version: 2``, ``Epistula-Timestamp``, ``Epistula-Uuid``,
``Epistula-Signed-By``, ``Epistula-Signed-For`` and ``Epistula-Request-Signature``
(``0x`` + hex). Unlike ``btauth/1`` the method and path are not signed: the body and
the receiver are. A request is accepted when it is signed for this receiver, no older
than ``max_age_ms`` (8 s) nor more than ``allowed_skew_ms`` (2 s) ahead, its signature
verifies, and its (sender, uuid, timestamp) was not accepted before (the shared
``NonceStore`` of ``shared.nonce_store``, as for ``btauth/1``).

Failures are ``bittensor.http_auth`` errors (``MalformedAuth``, ``WrongReceiver``,
``StaleRequest``, ``BadSignature``, ``ReplayedRequest``), so every receiver maps them
to 401 as it already does.
"""

from __future__ import annotations

import hashlib
import time
import uuid as uuid_module
from typing import Any, Literal, Mapping, Optional

from bittensor import sp_core
from bittensor.http_auth import (
    BadSignature,
    Caller,
    MalformedAuth,
    ReplayedRequest,
    StaleRequest,
    WrongReceiver,
)

from .auth import RequestVerifier, Signer

VERSION = "2"
HEADER_VERSION = "Epistula-Version"
HEADER_TIMESTAMP = "Epistula-Timestamp"
HEADER_UUID = "Epistula-Uuid"
HEADER_SIGNED_BY = "Epistula-Signed-By"
HEADER_SIGNED_FOR = "Epistula-Signed-For"
HEADER_SIGNATURE = "Epistula-Request-Signature"
MAX_AGE_MS = 8_000
ALLOWED_SKEW_MS = 2_000

MinerProtocol = Literal["btauth", "epistula"]


def message(body: bytes, uuid: str, timestamp: int | str, signed_for: str) -> bytes:
    """What the sender signs: the body's sha256 (hex), the uuid, the timestamp and the receiver."""
    return f"{hashlib.sha256(body).hexdigest()}.{uuid}.{timestamp}.{signed_for}".encode()


class EpistulaSigner:
    """Signs requests in Epistula with a hotkey loaded once (the same interface as ``shared.auth.Signer``)."""

    def __init__(self, keypair: Any):
        self.keypair = keypair
        self.hotkey: str = keypair.ss58_address

    def headers(self, method: str, path: str, body: bytes = b"", *, receiver: str) -> dict[str, str]:
        timestamp = time.time_ns() // 1_000_000
        request_uuid = str(uuid_module.uuid4())
        signature = self.keypair.sign(message(body, request_uuid, timestamp, receiver))
        return {
            HEADER_VERSION: VERSION,
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_UUID: request_uuid,
            HEADER_SIGNED_BY: self.hotkey,
            HEADER_SIGNED_FOR: receiver,
            HEADER_SIGNATURE: "0x" + bytes(signature).hex(),
        }


class MinerProtocolSigner:
    """Epistula for miners, ``btauth/1`` for the hotkeys in ``btauth_receivers`` (the validator's channel).

    ``SignedClient`` signs every call through ``headers``; with this signer one client serves both hops.
    """

    def __init__(self, btauth: Signer, epistula: EpistulaSigner, btauth_receivers: frozenset[str] = frozenset()):
        self.btauth = btauth
        self.epistula = epistula
        self.btauth_receivers = btauth_receivers
        self.keypair = btauth.keypair
        self.hotkey = btauth.hotkey

    def headers(self, method: str, path: str, body: bytes = b"", *, receiver: str) -> dict[str, str]:
        signer = self.btauth if receiver in self.btauth_receivers else self.epistula
        return signer.headers(method, path, body, receiver=receiver)


def signer_for(protocol: MinerProtocol, keypair: Any, btauth_receivers: frozenset[str] = frozenset()) -> Any:
    """The signer a process's ``SignedClient`` uses: ``btauth/1`` throughout, or Epistula towards miners."""
    signer = Signer(keypair)
    if protocol == "btauth":
        return signer
    return MinerProtocolSigner(signer, EpistulaSigner(keypair), btauth_receivers)


def is_epistula(headers: Mapping[str, str]) -> bool:
    return headers.get(HEADER_VERSION) is not None or headers.get(HEADER_VERSION.lower()) is not None


def check_headers(headers: Mapping[str, str], *, self_hotkey: str, now_ms: Optional[int] = None,
                  max_age_ms: int = MAX_AGE_MS, allowed_skew_ms: int = ALLOWED_SKEW_MS) -> dict[str, str]:
    """The Epistula header fields, or an ``AuthError``: every check that needs no body and no signature.

    A receiver runs it before reading the body, so a request that cannot pass costs no body read.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    if lowered.get(HEADER_VERSION.lower()) != VERSION:
        raise MalformedAuth(f"missing or unsupported {HEADER_VERSION} (expected {VERSION!r})")
    fields = {}
    for name in (HEADER_TIMESTAMP, HEADER_UUID, HEADER_SIGNED_BY, HEADER_SIGNED_FOR, HEADER_SIGNATURE):
        value = lowered.get(name.lower())
        if not value:
            raise MalformedAuth(f"missing {name}")
        fields[name] = value
    try:
        timestamp = int(fields[HEADER_TIMESTAMP])
    except ValueError:
        raise MalformedAuth(f"{HEADER_TIMESTAMP} is not a decimal integer (milliseconds)") from None
    if fields[HEADER_SIGNED_FOR] != self_hotkey:
        raise WrongReceiver("request was signed for a different receiving hotkey")
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if now - timestamp > max_age_ms:
        raise StaleRequest(f"{HEADER_TIMESTAMP} is older than the {max_age_ms / 1000:g}s freshness window")
    if timestamp - now > allowed_skew_ms:
        raise StaleRequest(f"{HEADER_TIMESTAMP} is more than {allowed_skew_ms / 1000:g}s in the future")
    return fields


def verify(headers: Mapping[str, str], body: bytes, *, self_hotkey: str, nonce_store: Any, now_ms: Optional[int] = None,
           max_age_ms: int = MAX_AGE_MS, allowed_skew_ms: int = ALLOWED_SKEW_MS) -> Caller:
    """The caller of an Epistula request, or an ``AuthError`` subclass that says why not.

    The replay store is written only once the signature verifies, so nobody can burn a sender's uuid.
    """
    fields = check_headers(headers, self_hotkey=self_hotkey, now_ms=now_ms, max_age_ms=max_age_ms,
                           allowed_skew_ms=allowed_skew_ms)
    timestamp = int(fields[HEADER_TIMESTAMP])
    try:
        signature = bytes.fromhex(fields[HEADER_SIGNATURE].removeprefix("0x"))
    except ValueError:
        raise MalformedAuth(f"{HEADER_SIGNATURE} is not hex") from None
    sender, receiver, request_uuid = fields[HEADER_SIGNED_BY], fields[HEADER_SIGNED_FOR], fields[HEADER_UUID]
    try:
        valid = sp_core.verify(message(body, request_uuid, timestamp, receiver), signature, sender,
                               sp_core.CRYPTO_SR25519)
    except ValueError:
        raise MalformedAuth("invalid hotkey address or signature encoding") from None
    if not valid:
        raise BadSignature("signature does not verify against the claimed hotkey")
    # Keyed by the sender and uuid, ordered by the timestamp (in ns, as the stores expire btauth nonces).
    if not nonce_store.check_and_store(f"{sender}:{request_uuid}", timestamp * 1_000_000):
        raise ReplayedRequest("this uuid was already accepted from this hotkey")
    return Caller(hotkey_ss58=sender, nonce_ns=timestamp * 1_000_000, crypto_type=sp_core.CRYPTO_SR25519)


class AnyProtocolVerifier(RequestVerifier):
    """``RequestVerifier`` that also accepts Epistula: the request's headers say which protocol it speaks."""

    def precheck(self, headers: Mapping[str, str]) -> None:
        if not is_epistula(headers):
            return super().precheck(headers)
        check_headers(headers, self_hotkey=self.self_hotkey)

    def authenticate(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Caller:
        if not is_epistula(headers):
            return super().authenticate(method, target, headers, body)
        return verify(headers, body, self_hotkey=self.self_hotkey, nonce_store=self.nonce_store)

__all__ = ["AnyProtocolVerifier", "EpistulaSigner", "MinerProtocolSigner", "check_headers", "is_epistula", "message",
           "signer_for", "verify"]

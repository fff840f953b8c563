"""btsession/1 attacked rule by rule: real miners (uvicorn on 127.0.0.1), real wallets, a local subnet file.

Each test plays the attacker against one rule of docs/sessions.md and expects the answer that rule
gives; the sender's side (``SignedClient(sessions=True)``) is checked against the same miners.
"""

from __future__ import annotations

import asyncio
import hmac
import http.client
import json
import socket
import time
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace

import pytest
from bittensor.http_auth import Caller, ReplayedRequest
from conftest_miner_helpers import bound_socket, uvicorn_thread

from miner.app import create_app
from miner.settings import MinerSettings
from shared import sessions
from shared.auth import Signer
from shared.chain.local import locked, read_subnet_file, write_subnet_file
from shared.coalesced_writes import CoalescingHttpProtocol
from shared.sessions import KeyedMac, SessionTable, agree, derive_key, mac, new_private_key, public_bytes
from shared.signed_http import SignedClient
from shared.wallet import ensure_wallet, load_hotkey

MODEL = "builtin-small"
CHAT = "/v1/chat/completions"
SENDERS = ("validator", "other_validator", "revoked", "outsider")
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "seed": 1,
                   "stream": False}).encode()


@pytest.fixture(scope="module")
def subnet(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    wallets = str(root / "wallets")
    keys = {name: ensure_wallet(name, "default", wallets) for name in (*SENDERS, "miner_a", "miner_b")}
    neurons = [
        {"uid": uid, "hotkey": hotkey, "coldkey": coldkey, "stake": 1000.0 if "valid" in name else 0.0,
         "validator_permit": name in ("validator", "other_validator", "revoked"), "axon": None}
        for uid, (name, (coldkey, hotkey)) in enumerate(keys.items())
    ]
    subnet_file = root / "subnet.json"
    subnet_file.write_text(json.dumps({"netuid": 1, "block": 1, "neurons": neurons}))
    return SimpleNamespace(root=root, wallets=wallets, file=subnet_file,
                           hotkeys={name: hotkey for name, (_, hotkey) in keys.items()},
                           signers={name: Signer(load_hotkey(name, "default", wallets)) for name in SENDERS})


def settings_for(subnet, name: str, port: int, **extra) -> MinerSettings:
    values = dict(wallet_name=name, wallet_hotkey="default", wallet_path=subnet.wallets, chain="local",
                  subnet_file=str(subnet.file), data_dir=str(subnet.root / "data"), redis_url="",
                  miner_host="127.0.0.1", miner_port=port, miner_models=MODEL, miner_tasks="InferenceTask",
                  miner_backend="builtin", miner_behaviour="good", metagraph_refresh_seconds=0.3,
                  miner_serve_on_start=False)
    values.update(extra)
    return MinerSettings(_env_file=None, **values)


@contextmanager
def run_miner(subnet, name: str, sock: socket.socket | None = None, **extra):
    sock = sock or bound_socket()
    port = sock.getsockname()[1]
    app = create_app(settings_for(subnet, name, port, **extra))
    with uvicorn_thread(app, sock, http=CoalescingHttpProtocol) as url:
        yield SimpleNamespace(url=url, port=port, hotkey=subnet.hotkeys[name], app=app)


@pytest.fixture(scope="module")
def miners(subnet):
    with ExitStack() as stack:
        yield {name: stack.enter_context(run_miner(subnet, name)) for name in ("miner_a", "miner_b")}


def send(miner, method: str, path: str, headers: dict, body: bytes | None = None) -> tuple[int, dict, bytes]:
    """One request on a connection of its own; a POST without a body sends ``BODY``."""
    if body is None:
        body = BODY if method == "POST" else b""
    connection = http.client.HTTPConnection("127.0.0.1", miner.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def handshake(subnet, miner, sender: str = "validator", *, headers: dict | None = None):
    """A session made by hand, as the sender's side does: (session id, key, the raw exchange)."""
    private = new_private_key()
    own = public_bytes(private)
    body = json.dumps({"public_key": own.hex()}).encode()
    signed = headers or subnet.signers[sender].headers("POST", sessions.PATH, body, receiver=miner.hotkey)
    status, _, answer = send(miner, "POST", sessions.PATH, signed, body)
    assert status == 200, answer
    reply = json.loads(answer)
    session_id, theirs = bytes.fromhex(reply["session"]), bytes.fromhex(reply["public_key"])
    key = agree(private, theirs, sender=subnet.hotkeys[sender], receiver=miner.hotkey, sender_public=own,
                receiver_public=theirs, session_id=session_id)
    return SimpleNamespace(id=reply["session"], key=key, lifetime=reply["lifetime"], sender_public=own,
                           receiver_public=theirs, body=body, headers=signed)


def session_headers(session, seq: int, method: str = "POST", path: str = CHAT, body: bytes = BODY, *,
                    timestamp: int | None = None, key: bytes | None = None) -> dict:
    timestamp = time.time_ns() // 1_000_000 if timestamp is None else timestamp
    return {sessions.HEADER_ID: session.id, sessions.HEADER_SEQ: str(seq), sessions.HEADER_TIMESTAMP: str(timestamp),
            sessions.HEADER_MAC: reference_mac(key or session.key, session.id, seq, timestamp, method, path, body)}


def reference_mac(key: bytes, session_id: str, seq: int, timestamp: int, method: str, path: str, body: bytes) -> str:
    """The MAC as docs/sessions.md defines it, computed by the standard library (not by ``shared.sessions``)."""
    head = f"btsession/1\n{session_id}\n{seq}\n{timestamp}\n{method}\n{path}\n".encode("latin-1")
    return hmac.digest(key, head + body, "sha256").hex()


@pytest.mark.parametrize("key_length", [0, 1, 32, 63, 64, 65, 200])
def test_the_keyed_mac_is_hmac_sha256(key_length):
    key = bytes(range(256))[:key_length]
    for body in (b"", b"x", BODY, bytes(range(256)) * 9):
        assert mac(KeyedMac(key), "ab" * 16, 7, 1_700_000_000_000, "POST", CHAT, body) == \
            reference_mac(key, "ab" * 16, 7, 1_700_000_000_000, "POST", CHAT, body)


def counts(subnet, miner) -> dict:
    headers = subnet.signers["validator"].headers("GET", sessions.PATH, b"", receiver=miner.hotkey)
    status, _, body = send(miner, "GET", sessions.PATH, headers)
    assert status == 200
    return json.loads(body)


def refused(result, marker: str | None = None, status: int = 401) -> bool:
    got_status, headers, _ = result
    return got_status == status and headers.get("btsession-error") == marker


# --- a session works ------------------------------------------------------------------------------------------


def test_a_session_request_is_answered_without_a_signature_check(subnet, miners):
    miner = miners["miner_a"]
    before = counts(subnet, miner)
    session = handshake(subnet, miner)
    for seq in (1, 2, 3):
        status, _, body = send(miner, "POST", CHAT, session_headers(session, seq))
        assert status == 200 and json.loads(body)["object"] == "chat.completion", body
    status, _, body = send(miner, "GET", "/availability", session_headers(session, 4, "GET", "/availability", b""))
    assert status == 200 and json.loads(body)["llm_model_availabilities"] == {MODEL: True}
    after = counts(subnet, miner)
    # two signed requests (the handshake and the first GET /session), four session ones
    assert after["signature_checks"] - before["signature_checks"] == 2
    assert after["session_checks"] - before["session_checks"] == 4
    assert after["handshakes"] - before["handshakes"] == 1


def test_requests_may_arrive_out_of_order_within_the_window(subnet, miners):
    miner = miners["miner_a"]
    session = handshake(subnet, miner)
    for seq in (5, 3, 1, 4, 2, 1000):
        assert send(miner, "POST", CHAT, session_headers(session, seq))[0] == 200


# --- the attacker's tests --------------------------------------------------------------------------------------


def test_a_replayed_session_request_is_401(subnet, miners):
    miner = miners["miner_a"]
    session = handshake(subnet, miner)
    headers = session_headers(session, 1)
    assert send(miner, "POST", CHAT, headers, BODY)[0] == 200
    status, _, body = send(miner, "POST", CHAT, headers, BODY)
    assert status == 401 and b"ReplayedRequest" in body
    # a fresh timestamp and a valid MAC do not make an old sequence number new
    assert send(miner, "POST", CHAT, session_headers(session, 1))[0] == 401


def test_a_sequence_number_below_the_window_is_401(subnet, miners):
    miner = miners["miner_a"]
    session = handshake(subnet, miner)
    assert send(miner, "POST", CHAT, session_headers(session, 2000))[0] == 200
    result = send(miner, "POST", CHAT, session_headers(session, 2000 - sessions.WINDOW))
    assert refused(result, sessions.OUT_OF_WINDOW) and b"older than the last" in result[2]
    assert send(miner, "POST", CHAT, session_headers(session, 2001 - sessions.WINDOW))[0] == 200  # just inside


def test_tampered_body_path_method_or_timestamp_is_401(subnet, miners):
    miner = miners["miner_a"]
    session = handshake(subnet, miner)
    good = session_headers(session, 1)
    assert send(miner, "POST", CHAT, good, BODY.replace(b"hi", b"ho"))[0] == 401  # body
    assert send(miner, "POST", CHAT + "?x=1", good, BODY)[0] == 401  # path (the raw target is MAC'd)
    for_get = session_headers(session, 2, "GET", "/availability", b"")
    assert send(miner, "GET", "/availability", {**for_get, sessions.HEADER_MAC: good[sessions.HEADER_MAC]})[0] == 401
    moved = {**good, sessions.HEADER_TIMESTAMP: str(int(good[sessions.HEADER_TIMESTAMP]) + 1)}
    assert send(miner, "POST", CHAT, moved, BODY)[0] == 401  # timestamp
    renumbered = {**good, sessions.HEADER_SEQ: "7"}
    assert send(miner, "POST", CHAT, renumbered, BODY)[0] == 401  # sequence number
    # none of those burnt the sequence number: the untouched request still goes through once
    assert send(miner, "POST", CHAT, good, BODY)[0] == 200


def test_a_request_delayed_past_the_freshness_window_is_401(subnet, miners):
    miner = miners["miner_a"]
    session = handshake(subnet, miner)
    now = time.time_ns() // 1_000_000
    old = session_headers(session, 1, timestamp=now - sessions.MAX_AGE_MS - 1000)
    status, headers, body = send(miner, "POST", CHAT, old)
    assert status == 401 and b"StaleRequest" in body and headers.get("btsession-error") is None
    ahead = session_headers(session, 2, timestamp=now + sessions.ALLOWED_SKEW_MS + 1000)
    assert send(miner, "POST", CHAT, ahead)[0] == 401
    assert sessions.MAX_AGE_MS == 10_000 and sessions.ALLOWED_SKEW_MS == 2_000  # btauth/1's own window


def test_a_session_used_by_another_sender_or_at_another_miner_is_401(subnet, miners):
    first, second = miners["miner_a"], miners["miner_b"]
    mine = handshake(subnet, first, "validator")
    theirs = handshake(subnet, first, "other_validator")
    # the other validator MACs with its own key under my session id
    forged = session_headers(mine, 1, key=theirs.key)
    assert send(first, "POST", CHAT, forged)[0] == 401
    # my session, taken to another miner: it does not exist there (and its key was never agreed there)
    result = send(second, "POST", CHAT, session_headers(mine, 1))
    assert refused(result, sessions.UNKNOWN)
    assert send(first, "POST", CHAT, session_headers(mine, 1))[0] == 200


def unread_body_answer(miner, headers: dict) -> str:
    """The answer to headers that declare a 1 MB body, none of it sent: only a server that does not read it answers."""
    with socket.create_connection(("127.0.0.1", miner.port), timeout=3) as raw:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        raw.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n{head}\r\n".encode())
        return raw.recv(65536).decode("latin-1").lower()


def test_a_forged_session_id_is_401_with_the_marker_and_the_body_is_not_read(subnet, miners):
    miner = miners["miner_a"]
    forged = SimpleNamespace(id="00" * 16, key=b"k" * 32)
    headers = session_headers(forged, 1)
    assert refused(send(miner, "POST", CHAT, headers), sessions.UNKNOWN)
    answer = unread_body_answer(miner, headers)
    assert answer.startswith("http/1.1 401") and "btsession-error: unknown" in answer
    assert "connection: close" in answer


def test_a_stale_timestamp_on_a_live_session_is_refused_before_the_body(subnet, miners):
    miner = miners["miner_a"]
    session = handshake(subnet, miner)
    stale = session_headers(session, 1, timestamp=time.time_ns() // 1_000_000 - sessions.MAX_AGE_MS - 1000)
    answer = unread_body_answer(miner, stale)
    assert answer.startswith("http/1.1 401") and "stalerequest" in answer and "connection: close" in answer
    assert "btsession-error" not in answer  # not a session problem: the sender does not re-send it


def test_several_workers_do_not_offer_sessions(subnet):
    assert settings_for(subnet, "miner_a", 1).sessions_offered
    assert not settings_for(subnet, "miner_a", 1, miner_workers=2).sessions_offered
    assert not settings_for(subnet, "miner_a", 1, miner_offer_sessions=False).sessions_offered


def test_a_replayed_handshake_is_refused_by_the_nonce_store(subnet, miners):
    miner = miners["miner_a"]
    session = handshake(subnet, miner)
    status, _, body = send(miner, "POST", sessions.PATH, session.headers, session.body)
    assert status == 401 and b"ReplayedRequest" in body


def test_a_handshake_must_be_signed_and_from_a_hotkey_the_policy_allows(subnet, miners):
    miner = miners["miner_a"]
    private = public_bytes(new_private_key())
    body = json.dumps({"public_key": private.hex()}).encode()
    outsider = subnet.signers["outsider"].headers("POST", sessions.PATH, body, receiver=miner.hotkey)
    status, _, answer = send(miner, "POST", sessions.PATH, outsider, body)
    assert status == 403 and b"not a permitted validator" in answer
    assert send(miner, "POST", sessions.PATH, {}, body)[0] == 401  # unsigned
    elsewhere = subnet.signers["validator"].headers("POST", sessions.PATH, body, receiver=miners["miner_b"].hotkey)
    assert send(miner, "POST", sessions.PATH, elsewhere, body)[0] == 401  # signed for another miner
    # a session cannot make a session: the handshake is signed or nothing
    session = handshake(subnet, miner)
    maced = session_headers(session, 1, path=sessions.PATH, body=body)
    assert send(miner, "POST", sessions.PATH, maced, body)[0] == 401
    bad_key = json.dumps({"public_key": "00" * 32}).encode()  # a low-order point: an all-zero shared secret
    signed = subnet.signers["validator"].headers("POST", sessions.PATH, bad_key, receiver=miner.hotkey)
    assert send(miner, "POST", sessions.PATH, signed, bad_key)[0] == 422


def set_permit(subnet, name: str, permit: bool) -> None:
    with locked(subnet.file):
        data = read_subnet_file(subnet.file)
        for neuron in data["neurons"]:
            if neuron["hotkey"] == subnet.hotkeys[name]:
                neuron["validator_permit"] = permit
        write_subnet_file(subnet.file, data)


def test_a_caller_whose_permit_is_revoked_after_the_handshake_gets_403(subnet, miners):
    miner = miners["miner_a"]
    session = handshake(subnet, miner, "revoked")
    assert send(miner, "POST", CHAT, session_headers(session, 1))[0] == 200
    set_permit(subnet, "revoked", False)
    try:
        deadline = time.monotonic() + 10
        seq = 2
        while True:
            status, _, body = send(miner, "POST", CHAT, session_headers(session, seq))
            seq += 1
            if status == 403 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 403 and b"not a permitted validator" in body
    finally:
        set_permit(subnet, "revoked", True)


def test_a_flood_of_handshakes_from_one_hotkey_stays_within_the_caps(subnet, miners):
    miner = miners["miner_b"]
    table = miner.app.state.verifier.sessions
    first = handshake(subnet, miner, "other_validator")
    for _ in range(sessions.MAX_PER_HOTKEY + 8):
        handshake(subnet, miner, "other_validator")
    assert table.count_for(subnet.hotkeys["other_validator"]) == sessions.MAX_PER_HOTKEY
    assert refused(send(miner, "POST", CHAT, session_headers(first, 1)), sessions.UNKNOWN)  # the oldest went


def test_caps_and_expiry_of_the_table():
    caller = Caller(hotkey_ss58="5Sender", nonce_ns=0, crypto_type=1)
    other = Caller(hotkey_ss58="5Other", nonce_ns=0, crypto_type=1)
    table = SessionTable("5Receiver", max_per_hotkey=3, max_sessions=5, lifetime=0.2)
    key = public_bytes(new_private_key())
    made = [table.accept_handshake(caller, key)["session"] for _ in range(10)]
    assert table.count_for("5Sender") == 3 and len(table) == 3
    assert [s for s in made if s in table._sessions] == made[-3:]
    for _ in range(4):
        table.accept_handshake(other, key)
    assert len(table) == 5  # the total cap: the oldest (the first sender's) went first
    time.sleep(0.25)
    with pytest.raises(sessions.SessionUnknown):
        table._live(made[-1])  # expired
    table.accept_handshake(other, key)
    assert len(table) == 1  # expired ones are swept at the next handshake


def test_the_window_by_itself():
    session = sessions.Session("id", b"k", "5S", 1, expires=time.monotonic() + 60)
    for seq in (1, 3, 2, 1024, 1025):
        session.accept(seq)
    for seq in (1, 2, 3, 1025):
        with pytest.raises(ReplayedRequest):
            session.accept(seq)
    with pytest.raises(sessions.OutOfWindow):
        session.accept(1)  # now below the window (1025 - 1024)
    session.accept(5000)  # a jump past the window clears it
    with pytest.raises(sessions.OutOfWindow):
        session.accept(1025)


def test_a_passive_observer_of_the_handshake_cannot_compute_a_valid_mac(subnet, miners):
    """It sees both public keys, the session id and both hotkeys; everything it can derive from them fails."""
    miner = miners["miner_a"]
    session = handshake(subnet, miner)
    binding = dict(sender=subnet.hotkeys["validator"], receiver=miner.hotkey, sender_public=session.sender_public,
                   receiver_public=session.receiver_public, session_id=bytes.fromhex(session.id))
    own = new_private_key()
    guesses = [
        agree(own, session.sender_public, **binding),  # its own secret against either public key
        agree(own, session.receiver_public, **binding),
        derive_key(b"\0" * 32, **binding),  # the KDF over what it saw
        derive_key(session.sender_public, **binding),
        derive_key(session.receiver_public, **binding),
        derive_key(bytes(a ^ b for a, b in zip(session.sender_public, session.receiver_public)), **binding),
    ]
    for seq, guess in enumerate(guesses, start=1):
        assert guess != session.key
        assert send(miner, "POST", CHAT, session_headers(session, seq, key=guess))[0] == 401
    assert send(miner, "POST", CHAT, session_headers(session, 1))[0] == 200  # the real key, for contrast


# --- the sender's side -----------------------------------------------------------------------------------------


async def chat(client: SignedClient, miner) -> tuple[int, bytes]:
    """One chat request to ``miner`` through ``client`` (signed or in a session, as the client decides)."""
    async with client.post_stream(miner.url, CHAT, BODY, receiver=miner.hotkey, connect_timeout=2,
                                  read_timeout=10) as response:
        return response.status, await response.read()


async def wait_for_session(client: SignedClient, miner, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while (found := client.sessions.session_id(miner.hotkey)) is None:
        assert time.monotonic() < deadline, "no session was made"
        status, _ = await chat(client, miner)
        assert status == 200
        await asyncio.sleep(0.05)
    return found


async def test_the_client_signs_until_a_session_is_made_then_uses_it(subnet, miners):
    miner = miners["miner_b"]
    client = SignedClient(subnet.signers["validator"], sessions=True)
    try:
        await wait_for_session(client, miner)
        before = counts(subnet, miner)
        for _ in range(5):
            status, body = await chat(client, miner)
            assert status == 200 and json.loads(body)["choices"]
        answer = await client.get_json(miner.url, "/availability", receiver=miner.hotkey)
        assert answer["llm_model_availabilities"] == {MODEL: True}
        after = counts(subnet, miner)
        assert after["session_checks"] - before["session_checks"] == 6
        assert after["signature_checks"] - before["signature_checks"] == 1  # only the GET /session itself
    finally:
        await client.close()


async def test_a_restarted_miner_is_transparent_to_the_client(subnet):
    sock = bound_socket()
    port = sock.getsockname()[1]
    client = SignedClient(subnet.signers["validator"], sessions=True)
    try:
        with run_miner(subnet, "miner_a", sock) as miner:
            old = await wait_for_session(client, miner)
        again = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        with run_miner(subnet, "miner_a", again) as miner:
            # the next request carries the old session: refused unprocessed, sent again signed, answered
            status, body = await chat(client, miner)
            assert status == 200 and json.loads(body)["choices"]
            assert (await client.get_json(miner.url, "/availability", receiver=miner.hotkey))["task_availabilities"]
            new = await wait_for_session(client, miner)
            assert new != old
            status, _ = await chat(client, miner)
            assert status == 200
            assert counts(subnet, miner)["session_checks"] >= 1
    finally:
        await client.close()


async def test_a_miner_that_does_not_offer_sessions_is_signed_to_as_before(subnet):
    client = SignedClient(subnet.signers["validator"], sessions=True)
    try:
        with run_miner(subnet, "miner_a", miner_offer_sessions=False) as miner:
            for _ in range(3):
                status, _ = await chat(client, miner)
                assert status == 200
                await asyncio.sleep(0.1)
            assert client.sessions.session_id(miner.hotkey) is None
            peer = client.sessions._peers[miner.hotkey]
            assert peer.retry_at - time.monotonic() > 200  # remembered as "no sessions" for a while
            found = counts(subnet, miner)
            assert not found["offered"] and found["session_checks"] == 0 and found["signature_checks"] >= 4
            # a session request sent anyway is refused with the marker (the client then signs)
            fake = SimpleNamespace(id="ab" * 16, key=b"k" * 32)
            assert refused(send(miner, "POST", CHAT, session_headers(fake, 1)), sessions.UNKNOWN)
    finally:
        await client.close()


async def test_the_handshake_may_be_signed_in_epistula(subnet, miners):
    from shared.epistula import signer_for

    miner = miners["miner_a"]
    client = SignedClient(signer_for("epistula", subnet.signers["validator"].keypair), sessions=True)
    try:
        before = counts(subnet, miner)
        await wait_for_session(client, miner)
        status, _ = await chat(client, miner)
        assert status == 200
        after = counts(subnet, miner)
        assert after["handshakes"] - before["handshakes"] == 1 and after["session_checks"] > before["session_checks"]
    finally:
        await client.close()


async def test_the_client_renews_its_session_before_it_expires(subnet, miners):
    miner = miners["miner_b"]
    table = miner.app.state.verifier.sessions
    client = SignedClient(subnet.signers["validator"], sessions=True)
    table.lifetime = 2.0
    try:
        first = await wait_for_session(client, miner)
        await asyncio.sleep(1.7)  # past 80% of the lifetime, before the sender's own expiry (1.8 s)
        before = counts(subnet, miner)
        status, _ = await chat(client, miner)
        assert status == 200  # on the old session; the renewal starts beside it
        await asyncio.sleep(0.3)
        second = client.sessions.session_id(miner.hotkey)
        assert second not in (None, first)
        status, _ = await chat(client, miner)
        assert status == 200
        after = counts(subnet, miner)
        assert after["session_checks"] - before["session_checks"] == 2 and after["handshakes"] > before["handshakes"]
    finally:
        table.lifetime = sessions.LIFETIME_SECONDS
        await client.close()

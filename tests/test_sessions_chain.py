"""btsession/1 end to end: the openai client → the API workers → reference miners, real processes.

With sessions on (the default) the answers are the same and a miner checks a signature only for the
handshakes (and for at most one request per sender before its session is made); a miner restarted
mid-run is transparent to the client; sessions off on either side works as before.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from openai import OpenAI

from localnet.launcher import get_json

SESSION_PATH = "/session"


def ask(client: OpenAI, uid: int | None = None, seed: int = 1) -> str:
    extra = {"seed": seed, **({"uids": [uid]} if uid is not None else {})}
    answer = client.chat.completions.create(model="builtin-small", extra_body=extra,
                                            messages=[{"role": "user", "content": f"hello {seed}"}])
    return answer.choices[0].message.content


def counts(net, signer, miner) -> dict:
    """The miner's own count of signature and session checks (a signed GET /session: one more signature check)."""
    headers = signer.headers("GET", SESSION_PATH, b"", receiver=miner.hotkey)
    return get_json(f"http://{miner.axon}{SESSION_PATH}", headers=headers)


def client_for(net) -> OpenAI:
    return OpenAI(base_url=net.api_url + "/v1", api_key=net.create_api_key("sessions"), max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def net(subnet_factory, tmp_path_factory):
    """Two good miners; the second one does not offer sessions."""
    net = subnet_factory(tmp_path_factory.mktemp("sessions-chain"), behaviours=["good", "good"],
                         miner_settings=[{}, {"miner_offer_sessions": False}])
    yield net
    net.stop()


def test_answers_work_and_the_miner_verifies_signatures_only_for_handshakes(net, signer_for):
    client, signer = client_for(net), signer_for(net, "validator")
    first, second = [m for m in net.members if m.role == "miner"]
    for seed in range(8):  # warm up: every sender (2 API workers, the validator) makes its session with miner 1
        assert ask(client, first.uid, seed)
    time.sleep(1.0)
    before = counts(net, signer, first)
    answers = [ask(client, first.uid, seed) for seed in range(30)]
    after = counts(net, signer, first)
    assert all(answers) and answers[:8] == [ask(client, second.uid, seed) for seed in range(8)]
    assert after["offered"] and after["session_checks"] - before["session_checks"] >= 30
    signed = after["signature_checks"] - before["signature_checks"] - 1  # minus our own GET /session
    handshakes = after["handshakes"] - before["handshakes"]
    # a sender signs only its handshake, and at most one request before its session is up (3 senders)
    assert signed - handshakes <= 3, (before, after)
    print(f"miner 1 over 30 chat requests: {after['session_checks'] - before['session_checks']} session MACs, "
          f"{signed} signatures ({handshakes} handshakes)")
    # the miner that does not offer sessions was signed to, every time, and answered
    plain = counts(net, signer, second)
    assert not plain["offered"] and plain["session_checks"] == 0 and plain["signature_checks"] >= 8


def test_the_api_workers_talk_to_the_validator_over_sessions_too(net, signer_for):
    client, signer = client_for(net), signer_for(net, "validator")
    validator = net.member("validator")
    for seed in range(4):
        assert ask(client, None, seed)
    deadline = time.monotonic() + 20
    while True:  # directory reads (every second per worker) and scoring batches go over the workers' sessions
        found = get_json(net.validator_url + SESSION_PATH,
                         headers=signer.headers("GET", SESSION_PATH, b"", receiver=validator.hotkey))
        if found["session_checks"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found["offered"] and found["handshakes"] >= 1 and found["session_checks"] > 0, found
    # a session id the validator never made: 401 with the marker, like a miner
    forged = {"Btsession-Id": "cd" * 16, "Btsession-Seq": "1", "Btsession-Timestamp": str(time.time_ns() // 10**6),
              "Btsession-Mac": "00" * 32}
    request = urllib.request.Request(net.validator_url + "/directory", headers=forged)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=3)
    assert refused.value.code == 401 and refused.value.headers["Btsession-Error"] == "unknown"


def test_a_miner_restarted_mid_run_is_transparent_to_the_client(net, signer_for):
    client, signer = client_for(net), signer_for(net, "validator")
    first = [m for m in net.members if m.role == "miner"][0]
    for seed in range(4):
        assert ask(client, first.uid, seed)
    name = next(n for n in net.processes if n.startswith(f"miner-{first.uid}-"))
    net.stop_process(name)
    net.start_miner(first)
    deadline = time.monotonic() + 30
    while True:  # the new process is up, and the validator (whose poll re-made its session) sees it again
        assert time.monotonic() < deadline, "the restarted miner did not come back"
        try:
            with urllib.request.urlopen(f"http://{first.axon}/health", timeout=1):
                pass
            if counts(net, signer, first)["handshakes"] >= 1:
                break
        except OSError:
            pass
        time.sleep(0.2)
    time.sleep(2.5)  # the API workers' directory refresh (1 s) sees it available
    fresh = counts(net, signer, first)
    # the API workers still hold sessions the new process never made: the next request must still succeed
    assert ask(client, first.uid, 99)
    after = counts(net, signer, first)
    assert after["signature_checks"] - fresh["signature_checks"] >= 2  # the refused request, re-sent signed
    for seed in range(6):
        assert ask(client, first.uid, seed)
    time.sleep(0.5)
    assert counts(net, signer, first)["session_checks"] > after["session_checks"]


def test_sessions_off_at_the_senders_work_the_old_way(subnet_factory, tmp_path_factory, signer_for):
    net = subnet_factory(tmp_path_factory.mktemp("sessions-off"), behaviours=["good"],
                         extra_env={"MINER_SESSIONS": "false"})
    try:
        client, signer = client_for(net), signer_for(net, "validator")
        miner = net.member("miner")
        for seed in range(5):
            assert ask(client, miner.uid, seed)
        found = counts(net, signer, miner)
        assert found["offered"] and found["handshakes"] == 0 and found["session_checks"] == 0
        assert found["signature_checks"] >= 5
    finally:
        net.stop()

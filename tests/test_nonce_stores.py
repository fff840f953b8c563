"""Replay protection shared by every process of a server: SQLite file or Redis.

Four processes verify the very same signed request; exactly one accepts it.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid

import bittensor as bt
import pytest
from bittensor import http_auth

from shared.auth import Signer
from shared.nonce_store import RedisNonceStore, SqliteNonceStore

SENDER = bt.sp_core.Keypair.create_from_uri("//Alice")
RECEIVER = bt.sp_core.Keypair.create_from_uri("//Bob").ss58_address


def verify_once(kind: str, where: str, namespace: str, headers: dict, results) -> None:
    store = SqliteNonceStore(where, namespace) if kind == "sqlite" else RedisNonceStore(where, namespace)
    try:
        http_auth.verify(headers, b"{}", method="POST", path="/v1/chat/completions", self_hotkey_ss58=RECEIVER,
                         nonce_store=store)
        results.put("accepted")
    except http_auth.ReplayedRequest:
        results.put("replayed")


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_exactly_one_process_accepts_a_request(kind, tmp_path, request):
    where = str(tmp_path / "nonces.sqlite") if kind == "sqlite" else request.getfixturevalue("redis_url")
    namespace = f"test-{uuid.uuid4().hex}"
    headers = Signer(SENDER).headers("POST", "/v1/chat/completions", b"{}", receiver=RECEIVER)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=verify_once, args=(kind, where, namespace, headers, results))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in workers)
    assert outcomes == ["accepted", "replayed", "replayed", "replayed"]


def test_sqlite_store_keeps_namespaces_apart(tmp_path):
    first = SqliteNonceStore(tmp_path / "n.sqlite", namespace="miner-a")
    second = SqliteNonceStore(tmp_path / "n.sqlite", namespace="miner-b")
    assert first.check_and_store("hk", 1) and not first.check_and_store("hk", 1)
    assert second.check_and_store("hk", 1)  # another receiver's record is not ours


def test_signer_never_repeats_a_nonce():
    signer = Signer(SENDER)
    nonces = [int(signer.headers("GET", "/x", receiver=RECEIVER)["X-Bittensor-Nonce"]) for _ in range(2000)]
    assert len(set(nonces)) == len(nonces) and nonces == sorted(nonces)


def test_many_openers_of_a_fresh_sqlite_file_all_succeed(tmp_path):
    """Two workers starting together on a fresh machine both switch the new file to WAL."""
    import threading

    from shared.sqlite import open_shared_sqlite

    for round_number in range(60):
        path = tmp_path / f"fresh-{round_number}.sqlite"
        errors: list[Exception] = []

        def open_it() -> None:
            try:
                open_shared_sqlite(path, timeout=10).execute("CREATE TABLE IF NOT EXISTS t (x)")
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []


def test_sqlite_store_forgets_only_nonces_older_than_its_retention(tmp_path):
    store = SqliteNonceStore(tmp_path / "n.sqlite", namespace="miner-a", retention=60)
    now = time.time_ns()
    ancient, recent = now - 61 * 10**9, now - 5 * 10**9
    assert store.check_and_store("hk", ancient) and store.check_and_store("hk", recent)
    for offset in range(SqliteNonceStore.CLEAN_UP_EVERY):  # enough writes for the periodic clean-up to run
        assert store.check_and_store("other", now + offset)
    assert not store.check_and_store("hk", recent)  # inside the retention: still refused
    assert not store.check_and_store("other", now)
    # past the retention the row is gone (verify() refuses such a nonce as stale before asking the store)
    assert store.check_and_store("hk", ancient)


def test_a_request_accepted_before_a_process_died_is_still_refused_after(tmp_path):
    """The store writes without syncing: a commit is in the OS's cache when ``check_and_store`` returns,
    so a process killed without closing anything leaves it for the next one."""
    path = str(tmp_path / "nonces.sqlite")
    headers = Signer(SENDER).headers("POST", "/v1/chat/completions", b"{}", receiver=RECEIVER)
    context = multiprocessing.get_context("fork")

    def accept_then_die() -> None:
        import os

        store = SqliteNonceStore(path, "ns")
        http_auth.verify(headers, b"{}", method="POST", path="/v1/chat/completions", self_hotkey_ss58=RECEIVER,
                         nonce_store=store)
        os._exit(7)  # accepted; no close, no flush: as a crash would leave it

    worker = context.Process(target=accept_then_die)
    worker.start()
    worker.join(30)
    assert worker.exitcode == 7
    with pytest.raises(http_auth.ReplayedRequest):
        http_auth.verify(headers, b"{}", method="POST", path="/v1/chat/completions", self_hotkey_ss58=RECEIVER,
                         nonce_store=SqliteNonceStore(path, "ns"))


def test_the_store_never_checkpoints_with_a_sync_on_the_callers_thread(tmp_path):
    store = SqliteNonceStore(tmp_path / "nonces.sqlite")
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 0  # OFF: see SqliteNonceStore
    now = time.time_ns()
    assert all(store.check_and_store("hk", now + i) for i in range(3000))
    assert not store.check_and_store("hk", now + 2999)
    store.close()


def test_a_damaged_file_is_set_aside_and_a_new_store_works(tmp_path):
    path = tmp_path / "nonces.sqlite"
    store = SqliteNonceStore(path)
    now = time.time_ns()
    for i in range(2000):
        store.check_and_store("hk", now + i)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    with open(path, "r+b") as damaged:  # what a power loss without syncs could leave
        damaged.seek(4096)
        damaged.write(b"\xff" * 8192)
    fresh = SqliteNonceStore(path)
    assert (tmp_path / "nonces.sqlite.damaged").exists()
    assert fresh.check_and_store("hk", now) and not fresh.check_and_store("hk", now)

"""The key cache's two promises: a change on any worker of the host is seen at once, and an expired
entry is looked up once however many requests wait for it."""

from __future__ import annotations

import asyncio
import multiprocessing

from api.keys import KeyCache, KeyRecord
from api.store.key_stamp import KeyStamp


def bump_many(path: str, times: int) -> None:
    stamp = KeyStamp(path)
    for _ in range(times):
        stamp.bump()
    stamp.close()


def test_concurrent_bumps_from_several_processes_are_all_counted(tmp_path):
    path = str(tmp_path / "keys-changed")
    reader = KeyStamp(path)
    assert reader.value() == 0
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=bump_many, args=(path, 250)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert reader.value() == 1000  # read from the mapping: no reopen, no stat


def test_a_file_left_by_an_older_version_still_counts(tmp_path):
    path = tmp_path / "keys-changed"
    path.write_bytes(b"...")  # the old format: one byte per change
    stamp = KeyStamp(str(path))
    before = stamp.value()
    stamp.bump()
    assert stamp.value() != before


async def test_waiting_requests_share_one_lookup_and_a_change_clears_the_cache(tmp_path):
    stamp = KeyStamp(str(tmp_path / "keys-changed"))
    lookups = []
    record = KeyRecord(id="key_1", key_hash="h", key_hint="sk-sn-…")

    async def load(key_hash: str):
        lookups.append(key_hash)
        await asyncio.sleep(0.05)
        return record

    cache = KeyCache(load, ttl=60, generation=stamp.value)
    answers = await asyncio.gather(*(cache.get("h") for _ in range(32)))
    assert answers == [record] * 32 and lookups == ["h"]
    assert await cache.get("h") is record and lookups == ["h"]  # cached
    KeyStamp(str(tmp_path / "keys-changed")).bump()  # another worker changed a key
    assert await cache.get("h") is record and lookups == ["h", "h"]

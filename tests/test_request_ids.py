"""Request ids sort by time, never repeat, and a forked worker draws its own prefix."""

from __future__ import annotations

import multiprocessing
import re

from shared.request_ids import new_id


def test_ids_are_unique_and_sort_in_the_order_they_were_made():
    ids = [new_id("chatcmpl") for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"chatcmpl-[0-9a-f]{32}", i) for i in ids[:100])
    assert ids == sorted(ids)


def _child_id(queue) -> None:
    queue.put(new_id("req"))


def test_a_forked_process_does_not_share_the_parents_prefix():
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_child_id, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    theirs = [queue.get(timeout=10) for _ in children]
    for child in children:
        child.join(timeout=10)
    prefixes = {i[len("req-") + 14:len("req-") + 24] for i in [*theirs, new_id("req")]}
    assert len(prefixes) == 3

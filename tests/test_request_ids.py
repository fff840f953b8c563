"""Request ids sort by time, never repeat, and a forked worker does not repeat its parent's draws."""

from __future__ import annotations

import multiprocessing
import re

from shared.request_ids import new_id

TIME_DIGITS = 14


def random_part(request_id: str) -> str:
    return request_id.split("-", 1)[1][TIME_DIGITS:]


def test_ids_are_unique_and_sort_by_the_time_they_were_made():
    ids = [new_id("chatcmpl") for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"chatcmpl-[0-9a-f]{32}", i) for i in ids[:100])
    times = [i.split("-", 1)[1][:TIME_DIGITS] for i in ids]
    assert times == sorted(times) and len(set(times)) > 1


def _child_ids(queue) -> None:
    queue.put([new_id("req") for _ in range(3)])


def test_a_forked_process_does_not_repeat_its_parents_random_draws():
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_child_ids, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    theirs = [queue.get(timeout=10) for _ in children]
    for child in children:
        child.join(timeout=10)
    mine = [new_id("req") for _ in range(3)]  # what a child would draw next, had it kept the parent's state
    parts = [{random_part(i) for i in ids} for ids in (*theirs, mine)]
    assert all(not (a & b) for n, a in enumerate(parts) for b in parts[n + 1:])

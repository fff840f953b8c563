"""Ids and nonce digits on the hot path come from ``random``, not ``secrets``: what that relies on."""

from __future__ import annotations

import os
import random
import re

import pytest

from miner import openai_wire


def test_completion_ids_keep_their_shape_and_do_not_repeat():
    ids = [openai_wire.new_completion_id() for _ in range(5000)]
    assert all(re.fullmatch(r"chatcmpl-[0-9a-f]{24}", completion_id) for completion_id in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_draws_other_nonce_digits_than_its_parent():
    """uvicorn forks its workers: ``random`` is reseeded in a child, so workers sharing a hotkey draw apart."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next draws, to the parent
        os.close(read)
        os.write(write, random.getrandbits(64).to_bytes(8, "big"))
        os._exit(0)
    os.close(write)
    child = int.from_bytes(os.read(read, 8), "big")
    os.close(read)
    os.waitpid(pid, 0)
    assert child != random.getrandbits(64)

"""bench/timeline.py: spans recorded in a real process, and answers joined with them by time.

The timeline's figures are only as good as its join: an answer matched with another request's spans would
report segments that never happened. So the join is checked on spans laid out by hand, including the cases
it must refuse (a span missing, a span that ends after the answer), and the recorder is checked in a real
Python process started the way the benchmark starts the API worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.timeline import overlaps, read_spans, segments

ROOT = Path(__file__).resolve().parent.parent


def test_one_answer_is_cut_into_its_seven_segments():
    api = {"api": [(1.000010, 1.000400)], "call": [(1.000100, 1.000350)]}
    miner = {"miner": [(1.000150, 1.000300)]}
    row = segments(1.0, 1.000450, api, miner)
    assert row == pytest.approx((10, 90, 50, 150, 50, 50, 50), abs=1e-3)
    assert sum(row) == pytest.approx(450, abs=1e-3)


def test_an_answer_without_all_its_spans_is_not_joined():
    api = {"api": [(1.000010, 1.000400)], "call": [(1.000100, 1.000350)]}
    assert segments(1.0, 1.000450, api, {"miner": []}) is None  # the miner's span is missing
    assert segments(1.0, 1.000450, {"api": api["api"]}, {"miner": [(1.00015, 1.0003)]}) is None  # no call
    # the next request's entry, which ends after this answer did, is not this answer's
    assert segments(1.0, 1.000300, api, {"miner": [(1.000150, 1.000300)]}) is None


def test_each_answer_takes_the_spans_that_start_after_it():
    api = {"api": [(1.0001, 1.0004), (2.0001, 2.0009)], "call": [(1.0002, 1.0003), (2.0002, 2.0008)]}
    miner = {"miner": [(1.00021, 1.00029), (2.00021, 2.00079)]}
    first, second = segments(1.0, 1.0005, api, miner), segments(2.0, 2.001, api, miner)
    assert first[3] == pytest.approx(80, abs=1e-3) and second[3] == pytest.approx(580, abs=1e-3)


def test_overlap_with_batches():
    batches = [(1.0, 1.01), (2.0, 2.02)]
    assert overlaps(batches, 1.005, 1.2)
    assert overlaps(batches, 0.9, 1.001)
    assert overlaps(batches, 2.019, 2.5)
    assert not overlaps(batches, 1.011, 1.999)
    assert not overlaps(batches, 0.1, 0.9)
    assert not overlaps([], 0.0, 9.0)


def test_the_recorder_wraps_the_workers_functions_in_a_real_process(tmp_path):
    """With ``bench/spans`` on PYTHONPATH and BENCH_SPANS_DIR set, a forwarder batch becomes a span."""
    program = (
        "import asyncio\n"
        "from api.forwarder import ScoringForwarder\n"
        "forwarder = ScoringForwarder(None, 'http://127.0.0.1:9', 'hotkey', batch_size=8, interval=1.0, max_buffer=8)\n"
        "assert asyncio.run(forwarder.send([])) == 0\n"
    )
    env = {**os.environ, "BENCH_SPANS_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "bench" / "spans"), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", program], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    (written,) = tmp_path.glob("*.spans")
    spans = read_spans(written)
    assert list(spans) == ["forward"] and len(spans["forward"]) == 1
    start, end = spans["forward"][0]
    assert 0 <= end - start < 1.0

    without = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env={**env, "BENCH_SPANS_DIR": ""})
    assert without.returncode == 0, without.stderr
    assert len(list(tmp_path.glob("*.spans"))) == 1  # nothing recorded without BENCH_SPANS_DIR

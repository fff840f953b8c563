"""``bench.measure.wait_until_quiet``: a benchmark's next run waits for the cores that the last one left busy.

LiteLLM at c=32 went on answering its queued requests after its client had gone, on the cores our stack's run
then started on; ``bench_peer.py`` now waits for a quiet machine before each run.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.measure import busy_cores, wait_until_quiet


def test_busy_cores_counts_a_spinning_process():
    before = busy_cores()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        pass
    assert busy_cores() - before >= 0.3  # this process alone kept a core busy for half a second


def test_the_wait_lasts_while_another_process_keeps_a_core_busy_and_ends_after():
    spinner = subprocess.Popen([sys.executable, "-c",
                                "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass"])
    try:
        time.sleep(0.1)
        waited = wait_until_quiet(max_busy=0.5, window=0.2, timeout=20)
    finally:
        spinner.wait()
    assert 1.0 <= waited < 20, waited

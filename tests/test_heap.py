"""``shared.heap.settle_heap``: start-up's heap frozen, cyclic garbage still collected, young threshold raised.

Run in a child interpreter so the test process's own collector is left as it was.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent("""
    import gc, weakref
    from shared.heap import YOUNG_THRESHOLD, settle_heap

    class Node:
        pass

    start_up = [Node() for _ in range(1000)]        # lives for the process: frozen
    cycle = Node(); cycle.me = cycle                # start-up garbage in a cycle: collected, not frozen
    gone = weakref.ref(cycle); del cycle
    settle_heap()
    assert gone() is None, "start-up's cyclic garbage was frozen instead of collected"
    assert gc.get_freeze_count() >= 1000, gc.get_freeze_count()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10), gc.get_threshold()

    later = Node(); later.me = later                # a request's cyclic garbage, after start-up
    later_gone = weakref.ref(later); del later
    for _ in range(3):
        junk = [[] for _ in range(YOUNG_THRESHOLD * 2)]  # enough allocations for young collections
    del junk
    assert later_gone() is None, "cyclic garbage made after start-up was never collected"
    print("ok")
""")


def test_settle_heap_freezes_start_up_and_still_collects_cycles():
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr

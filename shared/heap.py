"""The garbage collector, set for a server: what start-up built is left alone, and young collections are rarer.

    settle_heap()   # once, at the end of a server's start-up (its lifespan, before ``yield``)

CPython's cycle collector runs a young collection every 700 allocations and a
full one every 100 young ones. A server allocates a few hundred objects per
request, almost all freed by reference counting the moment the request ends,
and keeps a large heap from start-up (bittensor, FastAPI, pydantic models, the
corpus). Measured on the benchmark chain (``bench/bench_peer.py``, a sitecustomize
counting ``gc.callbacks``): the API worker ran ~2,300 young and ~19 full
collections in a 40 s run, 20 µs of CPU per request in all, and the reference
miner, which did not freeze its start-up heap, paused 40–80 ms per full collection.

So, once start-up is done: collect what start-up left behind, freeze the rest
(``gc.freeze``: start-up objects are never scanned again; they are still freed
by reference counting if dropped), and raise the young threshold to 3,000
(CPython 3.13's own default is 2,000), which halved the collector's time
per request in the same benchmark. Cyclic garbage still goes, a little later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 3_000
OLDER_THRESHOLDS = (10, 10)  # CPython's defaults for the older generations


def settle_heap() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)

"""Prometheus counts kept as plain numbers on the request path, added to the real series in batches.

    tally = Tally()
    tally.inc(counter.labels("ok"))          # one dict update
    tally.observe(histogram.labels(), 0.012)  # a bisect and two list updates
    tally.fold()                              # before a scrape, and every fraction of a second: into the series

Why: ``prometheus_client`` takes a lock on every ``inc`` and ``observe`` (and, with several workers, writes a
memory-mapped file), and checks the metric's labels each time; a chat request made about fourteen of those,
5–10% of an API worker's CPU per request. Here a request adds to a dict, and ``fold`` hands the sums over once
per batch: one ``inc`` per counter child and one per non-empty histogram bucket, whatever the number of
requests.

A histogram's observations are put in its buckets here, with the bounds the child was made with (the same
rule as ``prometheus_client``: the first bucket whose upper bound is >= the value), and folded into the
child's bucket and sum values. Those are ``prometheus_client``'s private attributes (``_upper_bounds``,
``_buckets``, ``_sum``); ``tests/test_metric_tally.py`` checks that a folded histogram exposes exactly what
the same observations made one by one do, so a release that renames them fails there, not in production.

One thread: the event loop's. What is not folded yet is not in ``/metrics``; every reader folds first
(``ApiMetrics``, ``ValidatorMetrics``), and the API workers fold on a short timer so that a scrape that sums
every worker's files (``API_WORKERS`` > 1) is at most that much behind.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any


class Tally:
    def __init__(self) -> None:
        self.counts: dict[Any, float] = {}
        self.histograms: dict[Any, list] = {}  # child → [sum, count in bucket 0, count in bucket 1, …]

    def inc(self, child: Any, amount: float = 1) -> None:
        """``child.inc(amount)`` at the next fold (a counter's child, or an unlabelled counter)."""
        counts = self.counts
        counts[child] = counts.get(child, 0) + amount

    def observe(self, child: Any, value: float) -> None:
        """``child.observe(value)`` at the next fold (a histogram's child, or an unlabelled histogram)."""
        if value != value:  # NaN: prometheus_client adds it to the sum and to no bucket
            child._sum.inc(value)
            return
        row = self.histograms.get(child)
        if row is None:
            row = self.histograms[child] = [0.0] + [0] * len(child._upper_bounds)
        row[0] += value
        row[1 + bisect_left(child._upper_bounds, value)] += 1

    def fold(self) -> None:
        """Everything counted since the last fold, into the series."""
        counts, self.counts = self.counts, {}
        for child, amount in counts.items():
            child.inc(amount)
        histograms, self.histograms = self.histograms, {}
        for child, row in histograms.items():
            child._sum.inc(row[0])
            buckets = child._buckets
            for index, count in enumerate(row[1:]):
                if count:
                    buckets[index].inc(count)

"""``shared.metric_tally``: what a fold exposes is exactly what the same calls made one by one expose.

The tally writes into ``prometheus_client``'s private bucket and sum values; these tests are what catches a
release that changes them. Both registries get the same observations, one through the tally and one
directly, and must expose the same series with the same values, sums up to the last bit of rounding
(in-process registries, then multiprocess files in a subprocess, as several API workers write them).
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from shared.http_metrics import LATENCY_BUCKETS
from shared.metric_tally import Tally

ROOT = Path(__file__).resolve().parent.parent
# On a bound, between bounds, below the first, above the last finite one, zero, negative, and repeats.
VALUES = [0.005, 0.0049, 0.0051, 0.3, 0.3, 0.0, -1.0, 60.0, 120.0, 120.5, 1e9, 2.5, 0.01, 0.024999]


def samples(text: bytes) -> dict[str, float]:
    """The exposition's samples by name and labels, without the creation times (they differ between any two
    registries) and the comments."""
    found = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#") and "_created" not in line:
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def same(one: dict[str, float], other: dict[str, float]) -> bool:
    """Equal series; sums equal up to rounding (a fold adds the batch's total, not each value in turn)."""
    return one.keys() == other.keys() and all(
        math.isclose(one[k], other[k], rel_tol=1e-12) or (math.isnan(one[k]) and math.isnan(other[k])) for k in one)


def exposed(registry: CollectorRegistry) -> dict[str, float]:
    return samples(generate_latest(registry))


def pair(registry: CollectorRegistry, prefix: str) -> tuple[Counter, Counter, Histogram, Histogram]:
    return (Counter(f"{prefix}_plain", "unlabelled", registry=registry),
            Counter(f"{prefix}_by", "labelled", ["a", "b"], registry=registry),
            Histogram(f"{prefix}_latency", "unlabelled", buckets=LATENCY_BUCKETS, registry=registry),
            Histogram(f"{prefix}_chunks", "labelled", ["route"], buckets=(1, 2, 4, 8), registry=registry))


def feed(tally: Tally | None, metrics: tuple) -> None:
    plain, by, latency, chunks = metrics

    def inc(child, amount=1):
        tally.inc(child, amount) if tally is not None else child.inc(amount)

    def observe(child, value):
        tally.observe(child, value) if tally is not None else child.observe(value)

    for index, value in enumerate(VALUES):
        inc(plain)
        inc(by.labels("x", str(index % 3)), index)
        observe(latency, value)
        observe(chunks.labels("/v1/chat/completions" if index % 2 else "/other"), index % 10)
    inc(plain, 2.5)


def test_a_fold_exposes_what_direct_calls_expose():
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    direct_metrics, tallied_metrics = pair(direct, "m"), pair(tallied, "m")
    tally = Tally()
    feed(None, direct_metrics)
    feed(tally, tallied_metrics)
    assert exposed(tallied)["m_plain_total"] == 0.0  # nothing is in the series before the fold
    tally.fold()
    assert not tally.counts and not tally.histograms
    assert same(exposed(tallied), exposed(direct))
    feed(None, direct_metrics)  # a second batch adds to the first
    feed(tally, tallied_metrics)
    tally.fold()
    assert same(exposed(tallied), exposed(direct))
    assert exposed(tallied)["m_plain_total"] == 2 * (len(VALUES) + 2.5)


def test_nan_goes_to_the_sum_and_to_no_bucket_as_prometheus_does():
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    one = Histogram("h", "", buckets=(1, 2), registry=direct)
    other = Histogram("h", "", buckets=(1, 2), registry=tallied)
    tally = Tally()
    for value in (0.5, math.nan, 1.5):
        one.observe(value)
        tally.observe(other, value)
    tally.fold()
    assert same(exposed(tallied), exposed(direct))
    assert exposed(tallied)["h_count"] == 2.0


def test_multiprocess_files_sum_to_what_direct_calls_give(tmp_path):
    """Two processes write their own files (one tallies, one calls directly); each sums to the same series."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'tests')!r})
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess
        from shared.metric_tally import Tally
        from test_metric_tally import feed, pair
        metrics = pair(None, "m")
        tally = Tally() if sys.argv[1] == "tally" else None
        feed(tally, metrics)
        if tally is not None:
            tally.fold()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        sys.stdout.buffer.write(generate_latest(registry))
    """)
    out = {}
    for mode in ("tally", "direct"):
        directory = tmp_path / mode
        directory.mkdir()
        result = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, timeout=60,
                                env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        out[mode] = result.stdout
    tallied, direct = samples(out["tally"]), samples(out["direct"])
    assert 'm_latency_bucket{le="0.005"}' in tallied and 'm_by_total{a="x",b="2"}' in tallied
    assert same(tallied, direct)

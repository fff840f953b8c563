"""``bench/wrk_load.py``: wrk against a real fake upstream on 127.0.0.1, and what it counts as an error.

``bench_peer.py --load wrk`` reports these figures beside LiteLLM's, so a run whose answers are all 404s
must show up as errors, not as a fast server. Without wrk the tests are skipped; in CI (``CI=true``, which
installs it) they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.wrk_load import available, parse, run_wrk
from localnet.launcher import free_port

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps({"model": "default", "messages": [{"role": "user", "content": "benchmark"}], "stream": False})


@pytest.fixture(scope="module")
def upstream():
    if not available():
        reason = "wrk missing: apt-get install -y wrk (see .ci/run)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the wrk test is required)", pytrace=False)
        pytest.skip(reason)
    port = free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.1)
    yield port, process.pid
    process.terminate()
    process.wait(10)


def test_answers_are_counted_with_their_latency_and_each_side_s_cpu(upstream):
    port, pid = upstream
    result = run_wrk(f"http://127.0.0.1:{port}/v1/chat/completions", BODY, concurrency=2, seconds=1,
                     servers={"upstream": [pid]})
    assert result["requests"] > 100 and result["errors"] == 0
    assert result["rps"] > 100 and 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["cpu_us"]["upstream"] > 0 and result["cpu_us"]["load"] > 0


def test_error_answers_are_errors_not_throughput(upstream):
    port, pid = upstream
    result = run_wrk(f"http://127.0.0.1:{port}/v1/nowhere", BODY, concurrency=2, seconds=1,
                     servers={"upstream": [pid]})
    assert result["requests"] > 0 and result["errors"] == result["requests"]


def test_a_report_without_a_latency_table_or_with_socket_errors():
    report = ("Running 1s test @ http://127.0.0.1:1/\n  1 threads and 2 connections\n"
              "  120 requests in 1.00s, 20.00KB read\n  Socket errors: connect 0, read 3, write 0, timeout 2\n"
              "Requests/sec:    119.50\nTransfer/sec:     20.00KB\n")
    result = parse(report)
    assert result["requests"] == 120 and result["errors"] == 5 and result["rps"] == 119.5
    assert result["p50_ms"] != result["p50_ms"]  # NaN: no --latency table in this report
    with pytest.raises(ValueError):
        parse("wrk: command not found")

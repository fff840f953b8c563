"""Prometheus ``/metrics`` and the health probes, on the API workers and the validator."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import gateway_client as gw
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import FOLD_SECONDS
from api.metrics_dir import prepare
from api.readiness import readiness
from shared.schemas import Directory

CREDITS_ROUTE = {"method": "GET", "route": "/v1/credits", "status": "200"}


def value(text: str, name: str, labels: dict | None = None) -> float:
    """The sample ``name`` with (at least) these labels; 0 when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return sample.value
    return 0.0


async def scrape(url: str) -> str:
    """On a new connection each time, so that successive scrapes may land on different workers."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        async with session.get(url + "/metrics") as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
            return await response.text()


def per_worker(directory: Path, tmp: Path, name: str, labels: dict) -> dict[str, float]:
    """Each worker's own count, read from its own counter file alone."""
    found = {}
    for path in directory.glob("counter_*.db"):
        alone = tmp / path.stem
        alone.mkdir()
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        found[path.stem.split("_")[1]] = value(generate_latest(registry).decode(), name, labels)
    return found


async def test_api_metrics_add_up_over_two_workers(local_subnet, api_key, tmp_path):
    url = local_subnet.api_url
    before = value(await scrape(url), "gateway_http_requests_total", CREDITS_ROUTE)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=8)) as session:
        async def credits() -> int:
            async with session.get(url + "/v1/credits", headers={"api-key": api_key}) as response:
                await response.read()
                return response.status

        assert await asyncio.gather(*(credits() for _ in range(40))) == [200] * 40
    # Each worker folds what its requests tallied every FOLD_SECONDS (shared.metric_tally); the worker that
    # answers a scrape folds its own first. After that long, whichever worker answers, the sum of both.
    await asyncio.sleep(2 * FOLD_SECONDS)
    scrapes = [value(await scrape(url), "gateway_http_requests_total", CREDITS_ROUTE) for _ in range(8)]
    assert scrapes == [before + 40] * 8

    folder = local_subnet.directory / "data" / "api" / "metrics" / f"api-{local_subnet.api_port}"
    workers = per_worker(folder, tmp_path, "gateway_http_requests_total", CREDITS_ROUTE)
    assert len(workers) == 2 and all(count > 0 for count in workers.values()), workers
    assert sum(workers.values()) == before + 40
    text = await scrape(url)
    assert value(text, "gateway_workers") == 2
    assert value(text, "gateway_http_request_duration_seconds_count", {"route": "/v1/credits"}) >= before + 40


async def test_requests_tokens_and_miner_outcomes_are_counted(local_subnet, api_key):
    """Counted when each request is recorded (its miners done): earlier tests' slow miners may still add, so ≥."""
    url = local_subnet.api_url
    good = local_subnet.member("miner", "good").uid
    text = await scrape(url)
    ok, tokens = (value(text, "gateway_requests_total", {"outcome": "ok", "task": "InferenceTask"}),
                  value(text, "gateway_tokens_total", {"kind": "completion"}))
    answers = [await gw.chat(url, api_key, max_tokens=3, uids=[good]) for _ in range(3)]
    assert [a.status for a in answers] == [200] * 3
    assert (await gw.chat(url, "sk-sn-unknown")).status == 401

    async def counted():
        now = await scrape(url)
        done = value(now, "gateway_requests_total", {"outcome": "ok", "task": "InferenceTask"}) >= ok + 3
        return now if done and value(now, "gateway_tokens_total", {"kind": "completion"}) >= tokens + 9 else None

    after = await gw.eventually(counted, timeout=5)
    assert after, "requests and tokens were never counted"
    assert value(after, "gateway_miner_wins_total", {"uid": str(good)}) >= 3
    assert value(after, "gateway_miner_calls_total", {"uid": str(good), "outcome": "ok"}) >= 3
    assert value(after, "gateway_miner_latency_seconds_count") >= 3
    assert value(after, "gateway_http_errors_total", {"route": "/v1/chat/completions", "status": "401",
                                                      "code": "invalid_api_key"}) >= 1
    assert value(after, "gateway_validator_reachable") == 1 and value(after, "gateway_directory_available_miners") == 4


async def test_validator_metrics(local_subnet, api_key):
    url = local_subnet.validator_url
    received = value(await scrape(url), "validator_scoring_items_total", {"event": "received"})
    assert (await gw.chat(local_subnet.api_url, api_key)).status == 200

    async def forwarded():
        text = await scrape(url)
        return text if value(text, "validator_scoring_items_total", {"event": "received"}) > received else None

    text = await gw.eventually(forwarded, timeout=5)
    assert text, "the validator never counted the forwarded item"
    assert value(text, "validator_miner_responses_total", {"source": "organic", "status": "ok"}) >= 1
    assert "validator_scoring_queue_depth" in text and "validator_weight_sets_total" in text
    assert value(text, "validator_metagraph_neurons") == 6 and value(text, "validator_available_miners") == 4
    assert value(text, "validator_http_requests_total", {"route": "/directory", "status": "200"}) > 0


async def test_probes_on_the_api_and_the_validator(local_subnet):
    for base in (local_subnet.api_url, local_subnet.validator_url):
        alive = await gw.call("GET", base + "/health/liveness")
        assert (alive.status, alive.body) == (200, {"status": "alive"})
        ready = await gw.call("GET", base + "/health/readiness")
        assert ready.status == 200 and ready.body["status"] == "ready" and ready.body["reasons"] == []
    api = (await gw.call("GET", local_subnet.api_url + "/health/readiness")).body["checks"]
    assert {name for name, check in api.items() if check["ok"]} == {"store", "rate_limiter", "directory", "validator",
                                                                     "miners"}
    assert api["miners"]["available"] == 4 and not api["validator"]["required"]
    validator = (await gw.call("GET", local_subnet.validator_url + "/health/readiness")).body["checks"]
    assert validator["metagraph"]["neurons"] == 6 and validator["database"]["ok"]
    assert (await gw.call("GET", local_subnet.api_url + "/health/liveliness")).status == 200
    assert (await gw.call("GET", local_subnet.api_url + "/health")).body["status"] == "ok"


# -- readiness as a function, on states the live subnet does not reach --------------------------------------------


class Store:
    def __init__(self, error: Exception | None = None):
        self.error = error

    async def ping(self) -> None:
        if self.error:
            raise self.error


def state(store: Store, *, directory: bool = True, age: float = 1.0, reachable: bool = True, max_age: float = 600):
    miners = [{"uid": 1, "hotkey": "hk", "address": "127.0.0.1:1", "incentive": 1.0, "stake": 1.0,
               "availability": {"task_availabilities": {"InferenceTask": True}}}]
    copy = Directory(netuid=1, block=7, validator_hotkey="v", generated_at=time.time() - age, miners=miners)
    return SimpleNamespace(
        store=store, limiter=SimpleNamespace(), settings=SimpleNamespace(ready_max_directory_age_seconds=max_age),
        directory=SimpleNamespace(directory=copy if directory else None, fetched_at=time.time() - age,
                                  validator_reachable=reachable, validator_url="http://validator"))


async def test_readiness_says_why_it_is_not_ready():
    ready, body = await readiness(state(Store(ConnectionRefusedError("connection refused"))))
    assert not ready and body["status"] == "not_ready"
    assert body["reasons"] == ["store: ConnectionRefusedError: connection refused"]

    ready, body = await readiness(state(Store(), directory=False))
    assert not ready and body["reasons"][0].startswith("directory: no miner directory yet")

    ready, body = await readiness(state(Store(), age=900))
    assert not ready and "900 s old" in body["checks"]["directory"]["error"]
    assert (await readiness(state(Store(), age=900, max_age=0)))[0]  # 0: any age


async def test_a_validator_restart_does_not_make_workers_unready():
    ready, body = await readiness(state(Store(), reachable=False))
    assert ready and body["checks"]["validator"]["ok"] is False
    assert "last good copy" in body["checks"]["validator"]["error"]


def test_the_metrics_folder_starts_empty_per_port(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored afterwards: later subprocesses must not inherit it
    stale = tmp_path / "metrics" / "api-8000"
    stale.mkdir(parents=True)
    (stale / "counter_123.db").write_bytes(b"old")
    (stale / "notes.txt").write_text("kept")
    folder = prepare(str(tmp_path), 8000)
    assert folder == stale and sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(stale)  # what the workers will inherit

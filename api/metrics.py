"""Prometheus metrics of an API worker, right however many workers serve the port.

    metrics = ApiMetrics(enabled=True)          # in the lifespan (``api.gateway``); gateway.metrics
    app.add_middleware(MetricsMiddleware)        # shared.http_metrics: count, latency, first byte, errors
    metrics.observe_log(log)                     # every recorded request: outcome, tokens, miner calls
    await metrics.sampler(gateway)                 # lifespan task: buffers, directory, validator, every 2 s
    body = await metrics.render()                # GET /metrics

Several workers on one port (``API_WORKERS``): ``prometheus_client``'s
multiprocess mode, set up by ``metrics_dir.prepare`` before the workers
start; each worker writes to its own memory-mapped files (no lock shared
between processes) and a scrape sums them all. A worker that exits removes
its live gauges; its counters stay in the sums, as counters must. In a
process started any other way (tests, an embedding app) the metrics live in
a registry of this app's own.

On the request path a metric costs a dict update: counts are tallied
(``shared.metric_tally``) and folded into the series every ``FOLD_SECONDS``
and before every scrape, so one worker's files lag its requests by that much
at most. What is known only when the miners have finished (outcome, tokens,
miner calls) is counted when the request is recorded, off the request path.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any, Optional

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from shared.http_metrics import LATENCY_BUCKETS, HttpMetrics
from shared.metric_tally import Tally

from .routing import BANDS as ROUTING_BANDS
from .store import RequestLog

if TYPE_CHECKING:
    from .gateway import Gateway

SAMPLE_SECONDS = 2.0
FOLD_SECONDS = 0.25
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_mode() -> bool:
    """Whether ``prometheus_client`` was imported with ``PROMETHEUS_MULTIPROC_DIR`` set."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class ApiMetrics:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.multiprocess = enabled and multiprocess_mode()
        self.registry = None if self.multiprocess else CollectorRegistry()
        r = self.registry
        self.tally = Tally()
        self.http = HttpMetrics("gateway", r, self.tally)
        self.outcomes = Counter("gateway_requests", "Requests made with a key, by task and outcome (ok, rejected,"
                                " error, miner_error, client_closed)", ["task", "outcome"], registry=r)
        self.tokens = Counter("gateway_tokens", "Tokens metered (prompt, completion)", ["kind"], registry=r)
        self.credits = Counter("gateway_credits_charged", "Credits charged to keys", registry=r)
        self.miner_calls = Counter("gateway_miner_calls", "Miner calls, by uid and outcome (ok, error, timeout,"
                                   " cancelled)", ["uid", "outcome"], registry=r)
        self.miner_wins = Counter("gateway_miner_wins", "Requests a miner answered (won the race)", ["uid"],
                                  registry=r)
        self.miner_latency = Histogram("gateway_miner_latency_seconds", "One miner call, start to end",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.miner_first_chunk = Histogram("gateway_miner_first_chunk_seconds", "One miner call, start to first"
                                           " chunk", buckets=LATENCY_BUCKETS, registry=r)
        self.forwarded = Counter("gateway_scoring_forwarded", "Items delivered to the validator for scoring",
                                 registry=r)
        self.forward_dropped = Counter("gateway_scoring_forward_dropped", "Scoring items dropped: buffer full",
                                       registry=r)
        self.forward_over_budget = Counter("gateway_scoring_over_budget", "Rounds not forwarded: over the worker's"
                                           " forward budget per miner and key", registry=r)
        self.forward_buffer = Gauge("gateway_scoring_forward_buffer", "Scoring items waiting for the validator",
                                    multiprocess_mode="livesum", registry=r)
        self.logs_written = Counter("gateway_request_logs_written", "Request logs written to the store", registry=r)
        self.logs_dropped = Counter("gateway_request_logs_dropped", "Request logs dropped: buffer full", registry=r)
        self.log_buffer = Gauge("gateway_request_log_buffer", "Request logs waiting to be written",
                                multiprocess_mode="livesum", registry=r)
        self.directory_age = Gauge("gateway_directory_age_seconds", "Age of the miner directory (oldest worker)",
                                   multiprocess_mode="livemax", registry=r)
        self.available_miners = Gauge("gateway_directory_available_miners", "Miners available in the directory"
                                      " (worker that sees fewest)", multiprocess_mode="livemin", registry=r)
        self.validator_reachable = Gauge("gateway_validator_reachable", "1 when the validator answered the last"
                                         " directory refresh (every worker)", multiprocess_mode="livemin",
                                         registry=r)
        self.workers = Gauge("gateway_workers", "Worker processes serving this port", multiprocess_mode="livesum",
                             registry=r)
        self.served = Counter("gateway_served_answers", "Answers clients got, by the serving miner's validator"
                              " score relative to the best available (band: 0.9-1, 0.5-0.9, 0-0.5, 0)", ["band"],
                              registry=r)
        self.served_score = Counter("gateway_served_score", "Sum of the validator scores of the miners whose"
                                    " answers clients got (divide by gateway_served_answers_total)", registry=r)
        self.served_best_score = Counter("gateway_served_best_score", "Sum of the best available validator score"
                                         " at each answer (served_score / this = quality against the best)",
                                         registry=r)
        self.breaker_transitions = Counter("gateway_miner_breaker_transitions", "Miner circuit breakers opened or"
                                           " closed by this worker", ["transition"], registry=r)
        self.stream_breaks = Histogram("gateway_miner_stream_break_chunks", "Content chunks a miner sent before"
                                       " its stream broke (what STREAM_COMMIT_CHUNKS is chosen from)",
                                       buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64), registry=r)
        self._children: dict[tuple, Any] = {}
        self._last: dict[str, int] = {}

    # -- the request path -------------------------------------------------------------------------------------
    def observe_http(self, method: str, route: str, status: int, seconds: float, first_byte: Optional[float],
                     code: Optional[str]) -> None:
        if self.enabled:
            self.http.observe(method, route, status, seconds, first_byte, code)

    def observe_log(self, log: RequestLog) -> None:
        """One recorded request (called off the request path, when its miners have finished)."""
        if not self.enabled:
            return
        child, tally = self._child, self.tally
        tally.inc(child(self.outcomes, log.task or "none", log.outcome))
        if log.prompt_tokens:
            tally.inc(child(self.tokens, "prompt"), log.prompt_tokens)
        if log.completion_tokens:
            tally.inc(child(self.tokens, "completion"), log.completion_tokens)
        if log.charged:
            tally.inc(self.credits, log.charged)
        for miner in log.miners:
            uid = str(miner.uid)
            tally.inc(child(self.miner_calls, uid, miner.outcome))
            if miner.winner:
                tally.inc(child(self.miner_wins, uid))
            if miner.latency_ms is not None and miner.outcome != "cancelled":
                tally.observe(self.miner_latency, miner.latency_ms / 1000)
            if miner.first_chunk_ms is not None:
                tally.observe(self.miner_first_chunk, miner.first_chunk_ms / 1000)

    def observe_served(self, band: str, score: float, best: float) -> None:
        """A client got an answer from a miner in this score band (on the request path: a few increments)."""
        if self.enabled:
            tally = self.tally
            tally.inc(self._child(self.served, band))
            tally.inc(self.served_score, score)
            tally.inc(self.served_best_score, best)

    def observe_breaker(self, transition: str) -> None:
        if self.enabled:
            self.tally.inc(self._child(self.breaker_transitions, transition))

    def observe_break(self, content_chunks: int) -> None:
        if self.enabled:
            self.tally.observe(self.stream_breaks, content_chunks)

    def routing_summary(self) -> dict:
        """The served answers by band and their mean score, summed over this port's workers (the dashboard).

        Reads the series only (it runs in a thread): the caller folds first."""
        if not self.enabled:
            return {}
        registry = self.registry
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        bands = dict.fromkeys(ROUTING_BANDS, 0.0)
        score = best = 0.0
        for family in registry.collect():
            for sample in family.samples:
                if sample.name == "gateway_served_answers_total":
                    bands[sample.labels.get("band", "0")] = bands.get(sample.labels.get("band", "0"), 0) + sample.value
                elif sample.name == "gateway_served_score_total":
                    score += sample.value
                elif sample.name == "gateway_served_best_score_total":
                    best += sample.value
        answers = sum(bands.values())
        return {
            "answers": int(answers),
            "share_by_band": {band: (round(n / answers, 4) if answers else None) for band, n in bands.items()},
            "mean_score": round(score / answers, 4) if answers else None,
            "quality_vs_best": round(score / best, 4) if best else None,
        }

    def fold(self) -> None:
        """What requests tallied, into the series (on the event loop: the tally's one thread)."""
        if self.enabled:
            self.tally.fold()

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: ``labels()`` checks and locks on every call."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) > 100_000:  # label values come from a bounded set; this is a backstop
                self._children.clear()
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- sampled state ----------------------------------------------------------------------------------------
    def _advance(self, counter: Counter, name: str, total: int) -> None:
        """Counters kept as plain ints by their owners: add what grew since the last sample."""
        grown = total - self._last.get(name, 0)
        if grown > 0:
            counter.inc(grown)
        self._last[name] = total

    def sample(self, gateway: Gateway) -> None:
        if not self.enabled:
            return
        self.tally.fold()
        self.workers.set(1)
        forwarder, recorder, directory = gateway.forwarder, gateway.recorder, gateway.directory
        self.forward_buffer.set(len(forwarder.buffer))
        self._advance(self.forwarded, "forwarded", forwarder.sent)
        self._advance(self.forward_dropped, "forward_dropped", forwarder.dropped)
        self._advance(self.forward_over_budget, "forward_over_budget", forwarder.over_budget)
        self.log_buffer.set(len(recorder.buffer))
        self._advance(self.logs_written, "logs_written", recorder.written)
        self._advance(self.logs_dropped, "logs_dropped", recorder.dropped)
        current = directory.directory
        fetched_at = directory.fetched_at or (current.generated_at if current else None)
        self.directory_age.set(time.time() - fetched_at if fetched_at else float("inf"))
        self.available_miners.set(sum(1 for m in current.miners if m.availability is not None) if current else 0)
        self.validator_reachable.set(1 if directory.validator_reachable else 0)

    async def sampler(self, gateway: Gateway) -> None:
        """Samples every ``SAMPLE_SECONDS``; folds the tally every ``FOLD_SECONDS`` in between."""
        folds = max(1, round(SAMPLE_SECONDS / FOLD_SECONDS))
        while self.enabled:
            self.sample(gateway)
            for _ in range(folds):
                await asyncio.sleep(FOLD_SECONDS)
                self.tally.fold()

    def close(self, gateway: Gateway) -> None:
        """At worker exit: last sample, then this worker's live gauges leave the sums."""
        if not self.enabled:
            return
        self.sample(gateway)
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())

    # -- exposition -------------------------------------------------------------------------------------------
    def _render(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    async def render(self) -> bytes:
        """This worker's tally folded (on the loop: its one thread), then every worker's files read off it."""
        self.fold()
        return await asyncio.to_thread(self._render)

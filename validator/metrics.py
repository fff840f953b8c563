"""Prometheus ``GET /metrics`` on the validator's internal server.

Unsigned, like ``/health``, so that Prometheus can scrape it: the internal
server binds ``VALIDATOR_HOST`` (127.0.0.1 by default), which should stay
reachable only from the API workers and the monitoring host. ``METRICS_ENABLED=false``
removes the route.

HTTP series come from ``shared.http_metrics``; the rest is read from the
validator's own state at each scrape (one process, so nothing to sum):

    validator_scoring_queue_depth                     items waiting to be scored
    validator_scoring_items_total{event}              received, duplicates, dropped, scored (kept across restarts)
    validator_miner_responses_total{source,uid,status} every miner answer queued for scoring (since start)
    validator_miner_score{uid}, validator_miner_weight{uid}, validator_miner_rewards_total{uid},
    validator_miner_probation_seconds{uid}
    validator_weight_sets_total{result}               set, rate_limited, failed, error, skipped
    validator_weight_set_last_timestamp_seconds, validator_weight_set_last_success
    validator_synthetic_rounds_total
    validator_metagraph_block, validator_metagraph_neurons, validator_metagraph_age_seconds,
    validator_metagraph_failures, validator_available_miners
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterator, Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shared.http_metrics import HttpMetrics

if TYPE_CHECKING:
    from .services import Services

router = APIRouter()


class ValidatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http = HttpMetrics("validator", self.registry)

    def observe_http(self, method: str, route: str, status: int, seconds: float, first_byte: Optional[float],
                     code: Optional[str]) -> None:
        self.http.observe(method, route, status, seconds, first_byte, code)

    async def render(self, services: Services) -> bytes:
        queue = await services.queue.counters()
        self.http.tally.fold()
        return generate_latest(self.registry) + generate_latest(Snapshot(list(families(services, queue))))


class Snapshot:
    """What ``generate_latest`` needs: something with ``collect()``."""

    def __init__(self, metrics: list[Metric]):
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def families(services: Services, queue: dict) -> Iterator[Metric]:
    yield gauge("validator_scoring_queue_depth", "Items waiting to be scored", queue["pending"])
    yield gauge("validator_scoring_queue_max", "SCORING_QUEUE_MAX: past it the oldest items are dropped",
                services.queue.max_items)
    items = CounterMetricFamily("validator_scoring_items", "Scoring queue events (kept across restarts)",
                                labels=["event"])
    for event in ("received", "duplicates", "dropped", "scored"):
        items.add_metric([event], queue.get(event, 0))
    yield items

    responses = CounterMetricFamily("validator_miner_responses", "Miner answers queued for scoring, by source,"
                                    " uid and status (since start)", labels=["source", "uid", "status"])
    for (source, uid, status), count in sorted(services.queue.responses.items()):
        responses.add_metric([source, str(uid), status], count)
    yield responses

    weights = services.book.weights()
    score = GaugeMetricFamily("validator_miner_score", "Moving-average score", labels=["uid"])
    weight = GaugeMetricFamily("validator_miner_weight", "Weight the scores give now (normalised)", labels=["uid"])
    rewards = CounterMetricFamily("validator_miner_rewards", "Rewards blended into the score", labels=["uid"])
    probation = GaugeMetricFamily("validator_miner_probation_seconds",
                                  "Seconds left of the probation after the miner's last catch (0: none)",
                                  labels=["uid"])
    now = time.time()
    for row in services.book.table():
        uid = str(row["uid"])
        score.add_metric([uid], row["score"])
        weight.add_metric([uid], weights.get(row["uid"], 0.0))
        rewards.add_metric([uid], row["rewards"])
        probation.add_metric([uid], max(0.0, (row["probation_until"] or now) - now))
    yield from (score, weight, rewards, probation)

    setter = services.weights
    sets = CounterMetricFamily("validator_weight_sets", "Weight-setting attempts by result", labels=["result"])
    for result in ("set", "rate_limited", "failed", "error", "skipped"):
        sets.add_metric([result], setter.outcomes.get(result, 0))
    yield sets
    if setter.last is not None:
        yield gauge("validator_weight_set_last_timestamp_seconds", "When weights were last sent",
                    setter.last["at"])
        yield gauge("validator_weight_set_last_success", "1 if the last weight set succeeded",
                    1 if setter.last.get("success") else 0)
    yield CounterMetricFamily("validator_synthetic_rounds", "Synthetic rounds completed (since start)",
                              value=services.synthetic.rounds)

    graph = services.metagraph
    if graph.state is not None:
        yield gauge("validator_metagraph_block", "Block of the last metagraph read", graph.state.block)
        yield gauge("validator_metagraph_neurons", "Neurons on the subnet", len(graph.state.neurons))
    if graph.refreshed_at is not None:
        yield gauge("validator_metagraph_age_seconds", "Seconds since the last good metagraph read",
                    time.time() - graph.refreshed_at)
    yield gauge("validator_metagraph_failures", "Metagraph reads failed in a row", graph.failures)
    yield gauge("validator_available_miners", "Miners that answered the last availability poll",
                sum(1 for r in services.poller.records.values() if r.availability is not None))


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    from .services import services_of  # the services build this module's ValidatorMetrics: import late

    services = services_of(request)
    return Response(await services.metrics.render(services), media_type=CONTENT_TYPE_LATEST)

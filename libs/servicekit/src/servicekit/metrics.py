"""Prometheus metrics the services export on /metrics.

Domain counters belong to the service that counts (its `metrics.py`); labels are low-cardinality
enums, never ids or personal data, and a test checks that every name the dashboard and the
alerts in deploy/ reference is exported.

This module holds what is per app (`ServiceMetrics`): HTTP request rate and latency by route
template, consumer lag, outbox backlog and age, published and consumed events. Each app has its
own registry, so several services can run in one process (tests) without clashing registrations,
and each app's /metrics shows its own runtime. Domain counters and process metrics live in the
default registry and appear on every app's /metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from prometheus_fastapi_instrumentator.routing import _effective_routes
from starlette.requests import Request
from starlette.routing import BaseRoute, Match

from referral_events.outbox import outbox_stats

if TYPE_CHECKING:
    from fastapi import FastAPI

    from servicekit.runtime import Runtime

log = logging.getLogger(__name__)

# Request latency buckets: the redirect should answer in milliseconds, API writes in tens.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Paths that are not traffic: probes and the scrape itself.
UNMEASURED_PATHS = ["/healthz", "/readyz", "/metrics"]
# A scrape must answer even when Postgres or Kafka is slow; stale figures beat no figures.
REFRESH_TIMEOUT_SECONDS = 3.0


class ServiceMetrics:
    """One app's registry: HTTP metrics and the runtime's figures, sampled at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._runtime = runtime
        self._collector = _RuntimeCollector(runtime)
        self.registry.register(self._collector)

    def instrument(self, app: FastAPI) -> None:
        instrumentator = Instrumentator(
            should_group_status_codes=True,
            # Unknown paths (scanners, typos) fold into one "none" series instead of one each.
            should_ignore_untemplated=False,
            should_group_untemplated=True,
            excluded_handlers=UNMEASURED_PATHS,
            registry=self.registry,
        )
        instrumentator.add(
            http_metrics.requests(
                metric_doc="HTTP requests by route template, method and status class.",
                registry=self.registry,
            ),
            http_metrics.latency(
                metric_doc="HTTP request duration by route template, method and status class.",
                buckets=LATENCY_BUCKETS,
                registry=self.registry,
            ),
        )
        instrumentator.instrument(app)

    async def refresh(self) -> None:
        """Sample what needs I/O (consumer positions, the outbox table) for the next collect."""
        try:
            await asyncio.wait_for(self._collector.sample(), REFRESH_TIMEOUT_SECONDS)
        except Exception as exc:  # a failed sample must not fail the scrape
            self._collector.refresh_failures += 1
            log.warning("metrics sample failed: %r", exc)

    def exposition(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(REGISTRY)


class FrontDoorMetrics:
    """`http_requests_total` and `http_request_duration_seconds` for one handler answered by a
    front door (`app.ServiceApp.set_front`), labelled as the Prometheus middleware labels the
    routes it sees, so dashboards and alerts read both alike. Nothing is recorded without the
    app's registry (metrics not set up)."""

    def __init__(self, registry: CollectorRegistry | None, handler: str) -> None:
        self._handler = handler
        names = getattr(registry, "_names_to_collectors", {})
        self._requests = names.get("http_requests_total")
        self._latency = names.get("http_request_duration_seconds")
        # (method, status class) -> the two labelled children: `labels()` per request costs a
        # lock and a dict lookup with a tuple of strings each time. Bounded: methods come from
        # the client.
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, status: int, seconds: float) -> None:
        if self._requests is None or self._latency is None:
            return
        key = (method, status // 100)
        children = self._children.get(key)
        if children is None:
            labels = (self._handler, method, f"{key[1]}xx")
            children = (self._requests.labels(*labels), self._latency.labels(*labels))
            if len(self._children) < 32:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class RouteIndexedMetricsMiddleware(PrometheusInstrumentatorMiddleware):
    """The instrumentator's middleware with a faster route lookup.

    Upstream resolves the route template by trying every route of the app on every request
    (and re-flattening included routers each time): a tenth of a millisecond and more per
    request with forty routes, several times what link-service's redirect costs. This indexes
    the routes once by the first segment of their path, and tries only the routes of the
    request's first segment (plus routes starting with a parameter), in the app's order. The
    result is the same template.
    """

    _index: dict[str, list[tuple[int, str, BaseRoute, str]]] | None = None

    def _build_index(
        self, routes: list[BaseRoute]
    ) -> dict[str, list[tuple[int, str, BaseRoute, str]]]:
        index: dict[str, list[tuple[int, str, BaseRoute, str]]] = {}
        for order, route in enumerate(_effective_routes(routes)):
            path = getattr(route, "path", None)
            if not isinstance(path, str):
                continue
            literal = path.split("{", 1)[0]
            head, slash, _ = literal.lstrip("/").partition("/")
            # The first segment is known when the literal part covers all of it; "/{x}" or
            # "/v1{x}" can match any first segment and go under "".
            first = head if slash or literal == path else ""
            index.setdefault(first, []).append((order, literal, route, path))
        return index

    def _get_handler(self, request: Request) -> tuple[str, bool]:
        if self.should_include_root_path or request.scope.get("root_path"):
            return super()._get_handler(request)  # the rare mounted case, as upstream does it
        if self._index is None:
            self._index = self._build_index(list(request.app.routes))
        url_path: str = request.scope["path"]
        segment = url_path.lstrip("/").split("/", 1)[0]
        candidates = self._index.get(segment, []) + self._index.get("", [])
        if len(candidates) > 1:
            candidates.sort(key=lambda c: c[0])
        partial: str | None = None
        for _, literal, route, template in candidates:
            if not url_path.startswith(literal):
                continue
            match, _ = route.matches(request.scope)
            if match == Match.FULL:
                return template, True
            if match == Match.PARTIAL and partial is None:
                partial = template
        return (partial, True) if partial else (url_path, False)


class _RuntimeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._lag: dict[tuple[str, str, int], int] = {}
        self._backlog: float | None = None
        self._oldest_age: float | None = None
        self._parked: float | None = None
        self.refresh_failures = 0

    async def sample(self) -> None:
        lag: dict[tuple[str, str, int], int] = {}
        for consumer in self._rt.consumers:
            for tp, behind in (await consumer.lag()).items():
                lag[(consumer.group_id, tp.topic, tp.partition)] = behind
        self._lag = lag
        async with self._rt.pool.acquire(timeout=2) as conn:
            stats = await outbox_stats(conn)
        self._backlog = stats.backlog
        self._oldest_age = stats.oldest_age_seconds
        self._parked = stats.parked

    def collect(self) -> Iterator[Metric]:
        rt = self._rt
        info = GaugeMetricFamily(
            "referral_service_info", "The service this process runs.", labels=["service", "version"]
        )
        info.add_metric([rt.spec.name, rt.spec.version], 1)
        yield info

        lag = GaugeMetricFamily(
            "referral_consumer_lag",
            "Messages behind the partition's end per consumer group, topic and partition, "
            "as of the last fetch (sampled at scrape).",
            labels=["group", "topic", "partition"],
        )
        for (group, topic, partition), behind in sorted(self._lag.items()):
            lag.add_metric([group, topic, str(partition)], behind)
        yield lag

        backlog = GaugeMetricFamily(
            "referral_outbox_backlog", "Outbox rows committed but not yet published to Kafka."
        )
        age = GaugeMetricFamily(
            "referral_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row (0 when the outbox is drained).",
        )
        parked = GaugeMetricFamily(
            "referral_outbox_parked",
            "Outbox rows parked after the broker kept refusing them (`<service> outbox-release` "
            "gives them back once the cause is fixed).",
        )
        if self._backlog is not None and self._oldest_age is not None:
            backlog.add_metric([], self._backlog)
            age.add_metric([], self._oldest_age)
        if self._parked is not None:
            parked.add_metric([], self._parked)
        yield backlog
        yield age
        yield parked

        leader = GaugeMetricFamily(
            "referral_outbox_relay_leader",
            "1 when this replica's relay holds the publishing lock, else 0.",
        )
        leader.add_metric([], 1 if rt.relay is not None and rt.relay.is_leader else 0)
        yield leader

        published = CounterMetricFamily(
            "referral_events_published",
            "Events published to Kafka by this replica's outbox relay (acknowledged), by topic "
            "and event type.",
            labels=["topic", "type"],
        )
        if rt.relay is not None:
            for (topic, event_type), n in sorted(rt.relay.published.items()):
                published.add_metric([topic, event_type], n)
        yield published

        consumed = CounterMetricFamily(
            "referral_consumer_events",
            "Events taken from Kafka by consumer group, event type and outcome (handled, "
            "duplicate: already in the inbox).",
            labels=["group", "type", "outcome"],
        )
        dead = CounterMetricFamily(
            "referral_dlq_messages",
            "Messages moved to the dead-letter topic by consumer group and source topic.",
            labels=["group", "topic"],
        )
        stalled = GaugeMetricFamily(
            "referral_consumer_stalled_seconds",
            "Seconds since the consumer group's loop last got through a poll in this replica: "
            "near 0 while it keeps up, growing while one event is retried without end.",
            labels=["group"],
        )
        pruned = CounterMetricFamily(
            "referral_inbox_pruned",
            "Inbox rows deleted after the retention (INBOX_RETENTION_DAYS), by consumer group.",
            labels=["group"],
        )
        for consumer in rt.consumers:
            for (outcome, event_type), n in sorted(consumer.outcomes.items()):
                consumed.add_metric([consumer.group_id, event_type, outcome], n)
            for topic, n in sorted(consumer.dead_lettered_by_topic.items()):
                dead.add_metric([consumer.group_id, topic], n)
            stalled.add_metric([consumer.group_id], round(consumer.stalled_seconds(), 1))
            pruned.add_metric([consumer.group_id], consumer.pruned)
        yield consumed
        yield dead
        yield stalled
        yield pruned

        failures = CounterMetricFamily(
            "referral_metrics_sample_failures",
            "Scrapes whose lag/outbox sample failed or timed out (figures are then stale).",
        )
        failures.add_metric([], self.refresh_failures)
        yield failures

"""Traces, metrics and logs of the four services, each a real process on real Kafka and Postgres.

One referral journey (program, rule, webhook endpoint, enroll, click, signup, purchase) is sent
as one caller trace (a `traceparent` header on each request, as a merchant's backend or an
ingress would send). The services export their spans over OTLP/HTTP, configured only by the
standard OTEL_* variables, to a collector this test runs; it keeps them in memory. Then:

- the trace crosses all four services, every consumer span is the child of the span that
  produced its event, and the outgoing webhook is part of the same trace;
- /metrics of every service exports every metric the Grafana dashboard and the PrometheusRule
  alerts in deploy/ use, with the figures of the journey in them;
- the JSON logs carry trace and span ids and no e-mail address or client IP of the journey.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack import services
from devstack.postgres import create_scratch_database
from devstack.pytest_plugin import Infra
from devstack.testing import eventually, http_receiver, new_api_key

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy/k8s/monitoring"
SERVICE_NAMES = ("link-service", "attribution-service", "reward-service", "notification-service")
ADVOCATE_EMAIL = "ann.advocate@example.com"
FRIEND_EMAIL = "bob.friend@example.org"
CLIENT_IP = "203.0.113.57"  # TEST-NET-3: the friend's address as the ingress forwards it
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # OTLP Span.SpanKind values


@dataclass(frozen=True)
class SpanRecord:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str


@dataclass
class Collector:
    """An OTLP/HTTP trace receiver that keeps what it receives in memory."""

    spans: list[SpanRecord] = field(default_factory=list)

    async def traces(self, request: Request) -> Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        for resource_spans in message.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        SpanRecord(
                            service=attrs.get("service.name", "?"),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                        )
                    )
        return Response(status_code=200, media_type="application/x-protobuf")

    def of_trace(self, trace_id: str) -> list[SpanRecord]:
        return [s for s in self.spans if s.trace_id == trace_id]


@dataclass
class Receiver:
    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        self.received.append((dict(request.headers), json.loads(await request.body())))
        return Response(status_code=204)

    def types(self) -> set[str]:
        return {body.get("type", "") for _, body in self.received}


@dataclass
class Observed:
    urls: dict[str, str]
    trace_id: str
    collector: Collector
    receiver: Receiver
    log_dir: Path


@pytest.fixture(scope="module")
async def observed(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Observed]:
    database_url = await create_scratch_database(infra.admin_database_url)
    log_dir = tmp_path_factory.mktemp("observability-logs")
    key, entry = new_api_key("acme")
    collector, receiver = Collector(), Receiver()
    otlp_app = Starlette(routes=[Route("/v1/traces", collector.traces, methods=["POST"])])
    hooks_app = Starlette(routes=[Route("/hooks", receiver.handle, methods=["POST"])])
    async with http_receiver(otlp_app) as otlp_url, http_receiver(hooks_app) as hooks_url:
        cfg = services.StackConfig(
            database_url=database_url,
            kafka_bootstrap_servers=infra.kafka_bootstrap_servers,
            api_keys=[entry],
            topic_prefix=f"t{secrets.token_hex(4)}.",
            topic_partitions=2,
            fixed_ports=False,
            log_dir=log_dir,
            extra_env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url,
                "OTEL_TRACES_SAMPLER": "parentbased_always_on",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "LOG_JSON": "true",
                # Everything the services and their libraries log, to catch any leak.
                "LOG_LEVEL": "DEBUG",
            },
        )
        await asyncio.to_thread(services.migrate_here, cfg)
        running = services.start(cfg)
        try:
            await asyncio.to_thread(services.wait_ready, running, 90.0)
            urls = {s.definition.name: s.url for s in running}
            trace_id = await _journey(urls, f"Bearer {key}", f"{hooks_url}/hooks", receiver)
            yield Observed(urls, trace_id, collector, receiver, log_dir)
        finally:
            await asyncio.to_thread(services.stop, running)


async def _journey(urls: dict[str, str], auth: str, hook_url: str, receiver: Receiver) -> str:
    trace_id = secrets.token_hex(16)
    parent_id = secrets.token_hex(8)
    headers = {"Authorization": auth, "traceparent": f"00-{trace_id}-{parent_id}-01"}
    # The journey's requests carry that trace whether or not httpx is instrumented in this test
    # process (earlier in-process service tests instrument it globally, and an instrumented
    # client would replace the header with a new root trace): make it the current context too.
    caller = trace.NonRecordingSpan(
        trace.SpanContext(
            int(trace_id, 16),
            int(parent_id, 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
    )
    with trace.use_span(caller):
        await _journey_steps(urls, headers, hook_url, receiver)
    return trace_id


async def _journey_steps(
    urls: dict[str, str], headers: dict[str, str], hook_url: str, receiver: Receiver
) -> None:
    link, attribution, reward, notification = (urls[n] for n in SERVICE_NAMES)
    async with httpx.AsyncClient(headers=headers, timeout=15) as http:
        r = await http.post(
            f"{link}/v1/programs",
            json={"name": "Give 20, get 20", "landing_url": "https://shop.example.com/join"},
        )
        assert r.status_code == 201, r.text
        program_id = r.json()["id"]
        r = await http.put(
            f"{reward}/v1/programs/{program_id}/reward-rule",
            json={
                "advocate_reward": {"amount_minor": 2000, "currency": "USD"},
                "trigger": "first_purchase",
            },
        )
        assert r.status_code == 200, r.text

        # The friend signs up milliseconds after clicking, which fraud screening's "too fast"
        # check would hold for review: off for this program.
        async def too_fast_check_off() -> bool:
            r = await http.put(
                f"{attribution}/v1/programs/{program_id}/attribution-settings",
                json={"fraud": {"too_fast": {"enabled": False}}},
            )
            assert r.status_code in (200, 404), r.text  # 404: program not consumed yet
            return r.status_code == 200

        await eventually(too_fast_check_off, timeout=60)
        r = await http.post(
            f"{notification}/v1/webhook-endpoints",
            json={
                "url": hook_url,
                "event_types": ["conversion.attributed.v1", "reward.available.v1"],
            },
        )
        assert r.status_code == 201, r.text
        r = await http.post(
            f"{link}/v1/programs/{program_id}/advocates",
            json={"customer_id": "cus_ann", "email": ADVOCATE_EMAIL},
        )
        assert r.status_code == 201, r.text
        code = r.json()["code"]
        r = await http.get(
            f"{link}/r/{code}",
            headers={
                "X-Forwarded-For": CLIENT_IP,
                "User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
            },
            follow_redirects=False,
        )
        assert r.status_code == 302, r.text
        click_id = parse_qs(urlsplit(r.headers["location"]).query)["click_id"][0]

        # Sign up once attribution-service has the click (its /metrics says so): a signup racing
        # the click's consumer can be left pending until EVIDENCE_GRACE_SECONDS.
        async def click_consumed() -> bool:
            text = (await http.get(f"{attribution}/metrics")).text
            return any(
                s.name == "referral_consumer_events_total"
                and s.labels.get("type") == "link.clicked.v1"
                and s.value >= 1
                for family in text_string_to_metric_families(text)
                for s in family.samples
            )

        await eventually(click_consumed, timeout=60)
        r = await http.post(
            f"{attribution}/v1/conversions",
            json={
                "type": "signup",
                "customer_id": "cus_bob",
                "click_id": click_id,
                "email": FRIEND_EMAIL,
            },
        )
        assert r.status_code in (201, 202), r.text
        signup_id = r.json()["id"]
        last: dict[str, Any] = r.json()

        async def attributed() -> bool:
            nonlocal last
            last = (await http.get(f"{attribution}/v1/conversions/{signup_id}")).json()
            assert last["status"] in ("pending", "attributed"), last
            return bool(last["status"] == "attributed")

        try:
            await eventually(attributed, timeout=60)
        except TimeoutError:
            raise AssertionError(f"signup not attributed: {last}") from None
        r = await http.post(
            f"{attribution}/v1/conversions",
            json={
                "type": "purchase",
                "customer_id": "cus_bob",
                "order_id": "ord_1",
                "amount": "59.90",
                "currency": "USD",
            },
            headers={"Idempotency-Key": "ord_1"},
        )
        assert r.status_code == 201, r.text
    await eventually(
        lambda: {"conversion.attributed.v1", "reward.available.v1"} <= receiver.types(),
        timeout=90,
    )


def _ancestors(span: SpanRecord, by_id: dict[str, SpanRecord]) -> list[SpanRecord]:
    chain = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


async def test_one_trace_spans_all_four_services_through_kafka_to_the_webhook(
    observed: Observed,
) -> None:
    trace_id = observed.trace_id

    def consumer_spans_of_all_services() -> bool:
        spans = observed.collector.of_trace(trace_id)
        return {s.service for s in spans if s.kind == CONSUMER} >= set(SERVICE_NAMES[1:])

    await eventually(consumer_spans_of_all_services, timeout=60)
    await asyncio.sleep(1)  # the last batches of the span processors
    spans = observed.collector.of_trace(trace_id)
    by_id = {s.span_id: s for s in spans}
    assert {s.service for s in spans} >= set(SERVICE_NAMES)

    # Every consumer span continues the span that produced its event (in another service).
    consumers = [s for s in spans if s.kind == CONSUMER]
    for span in consumers:
        parent = by_id.get(span.parent_id)
        assert parent is not None, f"{span} has no parent in the trace"
        assert parent.kind == PRODUCER and parent.service != span.service, (span, parent)

    # HTTP -> Kafka -> consumer, hop by hop: the enrollment reaches attribution, the purchase
    # reaches reward and notification; each chain starts at the request's server span. (The
    # redirect itself is answered before tracing, for speed; its click joins no trace.)
    def reached(service: str, topic: str, origin_service: str) -> bool:
        for span in consumers:
            if span.service == service and span.name.endswith(topic):
                chain = _ancestors(span, by_id)
                if any(a.service == origin_service and a.kind == SERVER for a in chain):
                    return True
        return False

    assert reached("attribution-service", "link.events", "link-service")
    assert reached("reward-service", "attribution.events", "attribution-service")
    assert reached("notification-service", "attribution.events", "attribution-service")

    # The webhooks went out inside the trace: the receiver got our trace id in `traceparent`,
    # and the parent it names is a client span of notification-service.
    def webhook_client_spans() -> list[SpanRecord]:
        return [
            s
            for s in observed.collector.of_trace(trace_id)
            if s.kind == CLIENT and s.service == "notification-service"
        ]

    await eventually(lambda: len(webhook_client_spans()) >= len(observed.receiver.received))
    spans = observed.collector.of_trace(trace_id)
    by_id = {s.span_id: s for s in spans}
    for headers, body in observed.receiver.received:
        assert "traceparent" in headers, body["type"]
        _, tid, parent_id, _ = headers["traceparent"].split("-")
        assert tid == trace_id, body["type"]
        hop = by_id[parent_id]
        assert (hop.service, hop.kind) == ("notification-service", CLIENT)
        assert any(a.kind == CONSUMER for a in _ancestors(hop, by_id)), hop


# ---- metrics --------------------------------------------------------------------------------

# Aggregations, functions, keywords and modifiers the dashboard and alerts use.
PROMQL_WORDS = frozenset(
    {
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "label_values",
        "topk",
        "bottomk",
        "absent",
    }
)


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (deploy/check.sh parses the same expressions with
    Prometheus' own parser; this is the same extraction for the live comparison)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", w)}


def _monitoring_expressions() -> dict[str, str]:
    exprs: dict[str, str] = {}
    rules = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            exprs[f"alert {rule.get('alert') or rule.get('record')}"] = rule["expr"]
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                exprs[f"panel {panel['title']} {target['refId']}"] = target["expr"]
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            # label_values(<series selector>, <label>): the selector is the PromQL part
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["definition"])
            assert selector, var
            exprs[f"variable {var['name']}"] = selector.group(1)
    return {k: v.replace("$job", ".*") for k, v in exprs.items()}


def _exported(text: str) -> tuple[set[str], list[Any]]:
    names: set[str] = set()
    samples = []
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
        for sample in family.samples:
            names.add(sample.name)
            samples.append(sample)
    return names, samples


async def test_every_metric_of_the_dashboard_and_alerts_is_exported(observed: Observed) -> None:
    exported: dict[str, set[str]] = {}
    samples: dict[str, list[Any]] = {}
    async with httpx.AsyncClient(timeout=15) as http:
        for name, url in observed.urls.items():
            r = await http.get(f"{url}/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            exported[name], samples[name] = _exported(r.text)

    expressions = _monitoring_expressions()
    assert len(expressions) >= 20
    everywhere = set().union(*exported.values())
    used: set[str] = set()
    for where, expr in expressions.items():
        names = _metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        missing = names - everywhere
        assert not missing, f"{where} uses {sorted(missing)}, which no service exports"
        used |= names
    assert {"referral_consumer_lag", "referral_outbox_oldest_age_seconds"} <= used
    assert {"referral_webhook_attempts_total", "http_requests_total"} <= used

    # Every service exports the runtime metrics the alerts group by service.
    for name in SERVICE_NAMES:
        assert {
            "http_requests_total",
            "http_request_duration_seconds_bucket",
            "referral_outbox_backlog",
            "referral_outbox_oldest_age_seconds",
            "referral_outbox_relay_leader",
            "referral_service_info",
        } <= exported[name], name

    def values(service: str, metric: str, **labels: str) -> list[float]:
        return [
            s.value
            for s in samples[service]
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    # The journey is in the figures: the redirect counted under its route template (not the
    # raw path with the code), its click published, consumed and lag reported per partition.
    assert sum(values("link-service", "http_requests_total", handler="/r/{code}")) >= 1
    raw_paths = {
        s.labels["handler"]
        for s in samples["link-service"]
        if s.labels.get("handler", "").startswith("/r/") and s.labels["handler"] != "/r/{code}"
    }
    assert not raw_paths
    published = values("link-service", "referral_events_published_total", type="link.clicked.v1")
    assert sum(published) >= 1
    assert sum(values("link-service", "referral_outbox_relay_leader")) == 1
    handled = values(
        "attribution-service", "referral_consumer_events_total", type="link.clicked.v1"
    )
    assert sum(handled) >= 1
    for consumer in SERVICE_NAMES[1:]:
        lag = [s for s in samples[consumer] if s.name == "referral_consumer_lag"]
        assert lag and all({"group", "topic", "partition"} <= s.labels.keys() for s in lag)
    attempts = values("notification-service", "referral_webhook_attempts_total")
    assert sum(attempts) >= 2


# ---- logs -----------------------------------------------------------------------------------


async def test_logs_are_json_with_trace_ids_and_hold_no_personal_data(observed: Observed) -> None:
    logs = {p.stem: p.read_text() for p in sorted(observed.log_dir.glob("*.log"))}
    assert set(logs) == set(SERVICE_NAMES)
    with_trace = 0
    for service, text in logs.items():
        records = []
        for line in text.splitlines():
            if line.strip():
                records.append(json.loads(line))  # every line is one JSON object
        assert records, service
        for rec in records:
            assert rec["service"] == service
            assert {"time", "level", "message"} <= rec.keys()
            if rec.get("trace_id"):
                assert re.fullmatch(r"[0-9a-f]{32}", rec["trace_id"])
                assert re.fullmatch(r"[0-9a-f]{16}", rec["span_id"])
        with_trace += sum(1 for r in records if r.get("trace_id") == observed.trace_id)
        for secret in (ADVOCATE_EMAIL, FRIEND_EMAIL, CLIENT_IP):
            assert secret not in text, f"{service} logged {secret}"
        email = re.search(r"[\w.+-]+@[A-Za-z][\w-]*(?:\.[A-Za-z][\w-]*)+", text)
        assert email is None, f"{service} logged an e-mail address: {email}"
    # The consumers log each handled event at DEBUG inside the journey's trace.
    assert with_trace >= 3

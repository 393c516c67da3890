"""SIGTERM under load loses nothing, black-box: real processes, real Kafka and Postgres, only
HTTP, Kafka and the inbox table the events library keeps.

link-service serves a stream of redirects while attribution-service consumes the clicks. Both
get SIGTERM in the middle of it (what Kubernetes sends on a rollout or scale-down). Then:

- both exit by themselves, with status 0, well inside the termination grace;
- every redirect that was answered (302 with a click id) has its link.clicked event on Kafka
  already when link-service has exited (the relay published what was committed and the producer
  flushed), and exactly once;
- after both restart, no click event is published a second time, attribution-service's group
  catches up, its inbox holds every click event exactly once, and the restarted consumer gets
  no redelivered event at all (the stopped one committed the offsets of all it had handled).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack import services
from devstack.pytest_plugin import Namespace
from devstack.testing import eventually, new_api_key, read_to_end, wait_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

LINK, ATTRIBUTION = services.SERVICES[0], services.SERVICES[1]
CONCURRENCY = 8
# SIGTERM once this many redirects were answered (or after LOAD_SECONDS, on a slow machine).
ANSWERED_BEFORE_SIGTERM = 150
LOAD_SECONDS = 8.0
EXIT_WITHIN_SECONDS = 45.0  # < terminationGracePeriodSeconds (75) in deploy/k8s


@dataclass
class Load:
    answered: list[str] = field(default_factory=list)  # click ids of 302 answers
    other_answers: list[int] = field(default_factory=list)
    refused_after_sigterm: int = 0
    sigterm_sent: bool = False


@dataclass
class Stack:
    cfg: services.StackConfig
    running: dict[str, services.RunningService]
    ns: Namespace
    headers: dict[str, str]
    log_dir: Path

    def url(self, name: str) -> str:
        return self.running[name].url


@pytest.fixture
async def stack(namespace: Namespace, tmp_path) -> AsyncIterator[Stack]:
    key, entry = new_api_key("acme")
    cfg = namespace.stack_config([entry], tmp_path / "logs")
    both = (LINK, ATTRIBUTION)
    await asyncio.to_thread(services.migrate_here, cfg, both)
    started = services.start(cfg, both)
    stack = Stack(
        cfg,
        {s.definition.name: s for s in started},
        namespace,
        {"Authorization": f"Bearer {key}"},
        tmp_path / "logs",
    )
    try:
        await asyncio.to_thread(services.wait_ready, started, 90.0)
        yield stack
    finally:
        await asyncio.to_thread(services.stop, list(stack.running.values()))
        for log in sorted((tmp_path / "logs").glob("*.log")):
            text = log.read_text()
            if "Traceback" in text:
                print(f"--- {log.name}\n{text[-4000:]}")


async def _redirects(url: str, load: Load) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        while True:
            try:
                r = await http.get(url, follow_redirects=False)
            except httpx.TransportError:
                if load.sigterm_sent:
                    load.refused_after_sigterm += 1
                    return  # the server stopped accepting: expected after SIGTERM
                raise
            if r.status_code == 302:
                query = parse_qs(urlsplit(r.headers["location"]).query)
                load.answered.append(query["click_id"][0])
            else:
                load.other_answers.append(r.status_code)


async def _wait_exit(svc: services.RunningService, started: float) -> float:
    while svc.process.poll() is None:
        if time.monotonic() - started > EXIT_WITHIN_SECONDS:
            raise AssertionError(f"{svc.definition.name} still running after SIGTERM")
        await asyncio.sleep(0.1)
    # uvicorn re-raises the signal after its graceful shutdown, so the status is "killed by
    # SIGTERM" (-15) or 0; the runtime's log line says whether every stage finished in time.
    code = svc.process.returncode
    assert code in (0, -signal.SIGTERM), f"{svc.definition.name} exited {code}"
    return time.monotonic() - started


def _stopped_cleanly(stack: Stack, name: str) -> bool:
    log = (stack.log_dir / f"{name}.log").read_text()
    return f"{name} stopped cleanly" in log


async def _click_events(ns: Namespace) -> tuple[Counter[str], set[str]]:
    """link.clicked events on Kafka: how often each click id appears, and the event ids."""
    records = await read_to_end(ns.kafka_bootstrap_servers, ns.topic_prefix + "link.clicks")
    clicks: Counter[str] = Counter()
    event_ids = set()
    for rec in records:
        event = json.loads(rec.value)
        if event["type"] == "link.clicked.v1":
            clicks[event["data"]["click_id"]] += 1
            event_ids.add(event["id"])
    return clicks, event_ids


def _metric(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_sigterm_under_load_loses_and_doubles_nothing(stack: Stack) -> None:
    link = stack.url(LINK.name)
    async with httpx.AsyncClient(headers=stack.headers, timeout=15) as http:
        r = await http.post(
            f"{link}/v1/programs",
            json={"name": "Give 20, get 20", "landing_url": "https://shop.example.com/join"},
        )
        assert r.status_code == 201, r.text
        r = await http.post(
            f"{link}/v1/programs/{r.json()['id']}/advocates", json={"customer_id": "cus_ann"}
        )
        assert r.status_code == 201, r.text
        code = r.json()["code"]

    load = Load()
    workers = [
        asyncio.create_task(_redirects(f"{link}/r/{code}", load)) for _ in range(CONCURRENCY)
    ]
    deadline = time.monotonic() + LOAD_SECONDS
    while len(load.answered) < ANSWERED_BEFORE_SIGTERM and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        for w in workers:
            if w.done():
                w.result()  # a failure before SIGTERM fails the test here
    assert load.answered, "no redirect answered before SIGTERM"

    # SIGTERM both in the middle of the load: link-service mid-requests, attribution-service
    # mid-consumption of the clicks the load produces.
    answered_before = len(load.answered)
    load.sigterm_sent = True
    sent_at = time.monotonic()
    for name in (LINK.name, ATTRIBUTION.name):
        stack.running[name].process.send_signal(signal.SIGTERM)
    link_took = await _wait_exit(stack.running[LINK.name], sent_at)
    attribution_took = await _wait_exit(stack.running[ATTRIBUTION.name], sent_at)
    await asyncio.wait_for(asyncio.gather(*workers), timeout=30)
    print(
        f"answered {answered_before} before SIGTERM, {len(load.answered)} in all; "
        f"link exited after {link_took:.1f}s, attribution after {attribution_took:.1f}s"
    )
    assert _stopped_cleanly(stack, LINK.name) and _stopped_cleanly(stack, ATTRIBUTION.name)
    assert not load.other_answers, f"answers other than 302: {Counter(load.other_answers)}"
    assert len(set(load.answered)) == len(load.answered)

    # Nothing answered is missing from Kafka once link-service is gone, and nothing is doubled.
    clicks, event_ids = await _click_events(stack.ns)
    missing = set(load.answered) - set(clicks)
    assert not missing, f"{len(missing)} answered clicks never reached Kafka"
    assert max(clicks.values()) == 1, "a click event was published twice"

    # Restart both; they pick up where they stopped.
    restarted = services.start(stack.cfg, (LINK, ATTRIBUTION))
    stack.running.update({s.definition.name: s for s in restarted})
    await asyncio.to_thread(services.wait_ready, restarted, 90.0)
    group = stack.ns.topic_prefix + "attribution-service"
    await wait_caught_up(stack.ns.kafka_bootstrap_servers, [group], timeout=120)

    async with httpx.AsyncClient(timeout=15) as http:

        async def link_outbox_drained() -> bool:
            text = (await http.get(f"{link}/metrics")).text
            return _metric(text, "referral_outbox_relay_leader") == 1 and (
                _metric(text, "referral_outbox_backlog") == 0
            )

        await eventually(link_outbox_drained, timeout=60)
        after, _ = await _click_events(stack.ns)
        assert after == clicks, "the restarted relay published clicks again"

        attribution_metrics = (await http.get(f"{stack.url(ATTRIBUTION.name)}/metrics")).text
    redelivered = _metric(
        attribution_metrics, "referral_consumer_events_total", group=group, outcome="duplicate"
    )
    assert redelivered == 0, f"{redelivered} events were redelivered after a graceful stop"

    conn = await asyncpg.connect(stack.ns.database_url)
    try:
        rows = await conn.fetch(
            "SELECT event_id FROM attribution.inbox WHERE topic = $1",
            stack.ns.topic_prefix + "link.clicks",
        )
    finally:
        await conn.close()
    # Every click event was handled once (the inbox key is (consumer, event id)): none lost.
    assert {r["event_id"] for r in rows} == event_ids
    assert len(rows) == len(event_ids)

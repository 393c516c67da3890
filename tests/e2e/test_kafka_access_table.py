"""The one table of Kafka permissions (referral_events.topics.ACCESS) says what the services do:
each service's emitters publish exactly the topics it may produce to, and its consumer groups
read exactly the topics it may consume with groups its ACL prefix covers. A new emitter or
consumer fails here until the table (and so the KafkaUsers, deploy/tools/render_kafka_users.py)
grants it. No infrastructure needed."""

from __future__ import annotations

import importlib

import pytest

from devstack.services import SERVICES
from referral_events.emitter import Emitter
from referral_events.topics import ACCESS, access_of, acls


def test_every_service_has_one_row() -> None:
    assert sorted(a.service for a in ACCESS) == sorted(s.name for s in SERVICES)


@pytest.mark.parametrize("svc", SERVICES, ids=[s.name for s in SERVICES])
def test_the_table_matches_the_service(svc: object) -> None:
    name, package = svc.name, svc.package  # type: ignore[attr-defined]
    access = access_of(name)
    events = importlib.import_module(f"{package}.events")
    emitted = {e.topic for e in vars(events).values() if isinstance(e, Emitter)}
    assert emitted == set(access.produces)
    # every consumer group the service runs: its own and the one keeping its API-key copy
    consumers = importlib.import_module(f"{package}.main").SPEC.all_consumers()
    assert {t for c in consumers for t in c.topics} == set(access.consumes)
    groups = [r for r in acls(access) if r.resource == "group"]
    for consumer in consumers:
        assert any(consumer.group.startswith(g.name) for g in groups), consumer.group

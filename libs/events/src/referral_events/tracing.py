"""W3C trace context carried in Kafka headers, so one trace spans HTTP -> Kafka -> HTTP.

The outbox stores the context current when the event was written; the relay publishes it as
headers and the consumer continues the trace from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry import propagate
from opentelemetry.context import Context

KafkaHeaders = list[tuple[str, bytes]]


def current_context_carrier() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def to_kafka_headers(carrier: Mapping[str, str]) -> KafkaHeaders:
    return [(k, v.encode()) for k, v in carrier.items()]


def context_from_kafka_headers(headers: Sequence[tuple[str, bytes]] | None) -> Context:
    carrier = {k: v.decode(errors="replace") for k, v in (headers or ()) if v is not None}
    return propagate.extract(carrier)

"""How a service publishes: one `Emitter` per (service, topic) builds the envelope and the outbox
row of every event it emits, so every event of the platform is shaped, sourced and traced the
same way, whether it is enqueued alone, in a batch, or serialised ahead on a hot path.

A service declares its emitters once (its `events.py`) and builds each event type's payload in
one function there; handlers call `emit` (one event) or collect `row`s and `enqueue_rows` them
in one statement (set-wise work).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from opentelemetry import trace

from referral_events.envelope import CloudEvent, EventPayload, new_event
from referral_events.outbox import NO_TRACE, OutboxRow, enqueue_rows
from referral_events.tracing import current_context_carrier

# Spans keep the name they had when the outbox module made them (dashboards search by it).
tracer = trace.get_tracer("referral_events.outbox")


def service_source(service: str) -> str:
    """The CloudEvents `source` of everything `service` publishes."""
    return f"/services/{service}"


def trace_headers() -> str:
    """The current trace context as stored beside an outbox row; `NO_TRACE` outside a span,
    without building a carrier (hot paths run outside spans)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return NO_TRACE
    return json.dumps(current_context_carrier())


@dataclass(frozen=True)
class Emitter:
    """Publishes one service's events on one topic."""

    service: str
    topic: str

    @property
    def source(self) -> str:
        return service_source(self.service)

    def event(
        self,
        payload: EventPayload,
        *,
        tenant_id: str,
        key: str,
        subject: str | None = None,
        event_id: str | None = None,
        time: datetime | None = None,
    ) -> CloudEvent:
        """The envelope; `subject` defaults to the key (the entity whose order matters)."""
        return new_event(
            payload,
            source=self.source,
            tenant_id=tenant_id,
            subject=subject or key,
            event_id=event_id,
            time=time,
        )

    def row(
        self,
        payload: EventPayload,
        *,
        tenant_id: str,
        key: str,
        subject: str | None = None,
        event_id: str | None = None,
    ) -> OutboxRow:
        """The outbox row of one event, traced as a producer span of the current trace."""
        event = self.event(
            payload, tenant_id=tenant_id, key=key, subject=subject, event_id=event_id
        )
        return self.row_of(event, key=key)

    def row_of(self, event: CloudEvent, *, key: str) -> OutboxRow:
        """The outbox row of an envelope built by `event`."""
        with tracer.start_as_current_span(
            f"{self.topic} publish", kind=trace.SpanKind.PRODUCER
        ) as span:
            span.set_attribute("messaging.system", "kafka")
            span.set_attribute("messaging.destination.name", self.topic)
            span.set_attribute("messaging.message.id", event.id)
            span.set_attribute("cloudevents.event_type", event.type)
            headers = json.dumps(current_context_carrier())
        return OutboxRow(event.id, self.topic, key, event.to_json(), headers)

    def serialised_row(self, event_id: str, key: str, payload: bytes) -> OutboxRow:
        """The row of an envelope a hot path serialised itself (same document `event` builds,
        held equal by the caller's tests), carrying the current trace context if any."""
        return OutboxRow(event_id, self.topic, key, payload, trace_headers())

    async def emit(
        self,
        conn: asyncpg.Connection,
        payload: EventPayload,
        *,
        tenant_id: str,
        key: str,
        subject: str | None = None,
        event_id: str | None = None,
    ) -> CloudEvent:
        """Build and enqueue one event in `conn`'s transaction; the usual way a handler
        publishes."""
        event = self.event(
            payload, tenant_id=tenant_id, key=key, subject=subject, event_id=event_id
        )
        await enqueue_rows(conn, [self.row_of(event, key=key)])
        return event

"""W3C trace context carried in Kafka headers, so one trace spans HTTP -> Kafka -> HTTP.

The outbox stores the context current when the event was written; the relay publishes it as
headers and the consumer continues the trace from there.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry import context, propagate
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


@contextmanager
def continued_from(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the trace context saved in `carrier` (e.g. `current_context_carrier()` stored beside
    a row) current, so work resumed later from that row, such as a webhook a worker sends,
    joins the trace of the request or event that caused it."""
    token = context.attach(propagate.extract(dict(carrier or {})))
    try:
        yield
    finally:
        context.detach(token)


class _RecentEventContexts:
    """Trace context of the events this process consumed lately, by event id (bounded, LRU).

    Work that a consumed event causes later, outside its consumer span (a webhook a worker
    sends from a row the consumer wrote), continues the event's trace through this. It is
    best effort: after a restart, on another replica or for long-delayed retries the context
    is gone and the work starts a new trace. Code that needs the link for certain stores
    `current_context_carrier()` beside its row and uses `continued_from`.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._carriers: OrderedDict[str, dict[str, str]] = OrderedDict()

    def remember(self, event_id: str) -> None:
        carrier = current_context_carrier()
        if not carrier:
            return
        self._carriers[event_id] = carrier
        self._carriers.move_to_end(event_id)
        while len(self._carriers) > self._capacity:
            self._carriers.popitem(last=False)

    def carrier(self, event_id: str) -> dict[str, str] | None:
        return self._carriers.get(event_id)


recent_events = _RecentEventContexts()


def continued_from_event(event_id: str) -> AbstractContextManager[None]:
    """Continue the trace of consumed event `event_id` if this process still knows it."""
    carrier = recent_events.carrier(event_id)
    return continued_from(carrier) if carrier else nullcontext()

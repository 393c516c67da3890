"""The dead letters' producer starts over when the broker refuses its sequence numbers (after a
long outage), and the send that met it goes through on the new one; one renewal for many
senders."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from referral_events.kafka import RenewableProducer


class FakeProducer:
    def __init__(self, broken: bool = False, starts: bool = True) -> None:
        self.broken = broken
        self.starts = starts
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        if not self.starts:
            raise KafkaConnectionError("broker away")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send_and_wait(self, topic: str, **kwargs: Any) -> str:
        await asyncio.sleep(0)
        if self.broken:
            raise OutOfOrderSequenceNumber()
        self.sent.append((topic, kwargs))
        return "ack"


async def test_a_broken_producer_is_replaced_and_the_send_made_again() -> None:
    broken, fresh = FakeProducer(broken=True), FakeProducer()
    made: list[FakeProducer] = []

    def new() -> Any:
        made.append(fresh)
        return fresh

    p = RenewableProducer(broken, new)  # type: ignore[arg-type]
    assert await p.send_and_wait("t.dlq", value=b"v", key=b"k") == "ack"
    assert broken.stopped and fresh.started and p.producer is fresh
    assert fresh.sent == [("t.dlq", {"value": b"v", "key": b"k"})]
    assert await p.send_and_wait("t.dlq", value=b"w") == "ack"
    assert made == [fresh] and p.renewals == 1


async def test_concurrent_senders_share_one_renewal() -> None:
    broken = FakeProducer(broken=True)
    made: list[FakeProducer] = []

    def new() -> Any:
        made.append(FakeProducer())
        return made[-1]

    p = RenewableProducer(broken, new)  # type: ignore[arg-type]
    await asyncio.gather(*(p.send_and_wait("t.dlq", value=bytes([n])) for n in range(5)))
    assert len(made) == 1 and len(made[0].sent) == 5


async def test_a_renewal_the_broker_refuses_keeps_the_old_one_for_the_next_try() -> None:
    broken, away = FakeProducer(broken=True), FakeProducer(starts=False)
    p = RenewableProducer(broken, lambda: away)  # type: ignore[arg-type, return-value]
    with pytest.raises(KafkaConnectionError):
        await p.send_and_wait("t.dlq", value=b"v")
    assert p.producer is broken and away.stopped and p.renewals == 0


async def test_other_errors_are_not_renewals() -> None:
    class Failing(FakeProducer):
        async def send_and_wait(self, topic: str, **kwargs: Any) -> str:
            raise KafkaConnectionError("away")

    first = Failing()
    p = RenewableProducer(first, lambda: FakeProducer())  # type: ignore[arg-type, return-value]
    with pytest.raises(KafkaConnectionError):
        await p.send_and_wait("t.dlq", value=b"v")
    assert p.producer is first and p.renewals == 0


async def test_without_a_maker_a_broken_producer_is_kept_and_the_error_raised() -> None:
    broken = FakeProducer(broken=True)
    p = RenewableProducer(broken, None)  # type: ignore[arg-type]
    with pytest.raises(OutOfOrderSequenceNumber):
        await p.send_and_wait("t.dlq", value=b"v")
    assert p.producer is broken and not broken.stopped and p.renewals == 0

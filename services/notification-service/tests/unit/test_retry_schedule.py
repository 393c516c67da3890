from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notification_service.webhooks.domain import (
    DEFAULT_POLICY,
    AttemptResult,
    RetryPolicy,
    decide,
    parse_retry_after,
    retry_delay,
)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MIDDLE = 0.5  # rand() value that yields no jitter


def fails(status: int | None = 500, retry_after: str | None = None) -> AttemptResult:
    return AttemptResult(
        status, 10, error=None if status else "ConnectError", retry_after=retry_after
    )


def test_default_schedule_is_the_documented_one() -> None:
    waits = [retry_delay(n, DEFAULT_POLICY, lambda: MIDDLE) for n in range(1, 8)]
    assert waits == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=10),
    ]
    assert DEFAULT_POLICY.max_attempts == 8
    assert retry_delay(8, DEFAULT_POLICY, lambda: MIDDLE) is None


@given(attempt=st.integers(1, 7), r=st.floats(0, 1, exclude_max=True))
def test_jitter_stays_within_its_spread(attempt: int, r: float) -> None:
    base = DEFAULT_POLICY.schedule[attempt - 1]
    delay = retry_delay(attempt, DEFAULT_POLICY, lambda: r)
    assert delay is not None
    assert base * 0.9 <= delay <= base * 1.1


def test_jitter_spreads_both_ways() -> None:
    low = retry_delay(1, DEFAULT_POLICY, lambda: 0.0)
    high = retry_delay(1, DEFAULT_POLICY, lambda: 0.999999)
    assert low == timedelta(seconds=4.5)
    assert high is not None and high > timedelta(seconds=5.49)


def test_success_delivers() -> None:
    for status in (200, 201, 204, 299):
        assert decide(AttemptResult(status, 3), 1, NOW).outcome == "delivered"


@pytest.mark.parametrize("result", [fails(500), fails(503), fails(None), fails(400), fails(301)])
def test_failures_retry_on_the_schedule(result: AttemptResult) -> None:
    d = decide(result, 1, NOW, DEFAULT_POLICY, lambda: MIDDLE)
    assert d.outcome == "retry" and d.next_attempt_at == NOW + timedelta(seconds=5)
    d = decide(result, 3, NOW, DEFAULT_POLICY, lambda: MIDDLE)
    assert d.next_attempt_at == NOW + timedelta(minutes=30)
    assert not d.disable_endpoint


def test_gives_up_after_the_last_attempt() -> None:
    d = decide(fails(500), 8, NOW, DEFAULT_POLICY, lambda: MIDDLE)
    assert d.outcome == "failed" and d.next_attempt_at is None and not d.disable_endpoint
    assert "8 attempts" in (d.reason or "")


def test_gone_fails_at_once_and_disables_the_endpoint() -> None:
    d = decide(fails(410), 1, NOW)
    assert d.outcome == "failed" and d.disable_endpoint


def test_429_retry_after_seconds_is_honoured() -> None:
    d = decide(fails(429, "120"), 1, NOW, DEFAULT_POLICY, lambda: MIDDLE)
    assert d.next_attempt_at == NOW + timedelta(seconds=120)


def test_429_retry_after_date_is_honoured() -> None:
    when = format_datetime(NOW + timedelta(minutes=7), usegmt=True)
    d = decide(fails(429, when), 1, NOW, DEFAULT_POLICY, lambda: MIDDLE)
    assert d.next_attempt_at == NOW + timedelta(minutes=7)


def test_429_never_retries_sooner_than_the_schedule() -> None:
    d = decide(fails(429, "1"), 2, NOW, DEFAULT_POLICY, lambda: MIDDLE)
    assert d.next_attempt_at == NOW + timedelta(minutes=5)


def test_429_cannot_park_a_delivery_past_the_longest_wait() -> None:
    d = decide(fails(429, str(30 * 24 * 3600)), 1, NOW, DEFAULT_POLICY, lambda: MIDDLE)
    assert d.next_attempt_at == NOW + timedelta(hours=10)


def test_429_without_retry_after_uses_the_schedule() -> None:
    for header in (None, "soon", ""):
        d = decide(fails(429, header), 1, NOW, DEFAULT_POLICY, lambda: MIDDLE)
        assert d.next_attempt_at == NOW + timedelta(seconds=5)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("0", NOW) == timedelta(0)
    assert parse_retry_after(" 30 ", NOW) == timedelta(seconds=30)
    past = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past, NOW) == timedelta(0)
    assert parse_retry_after("-5", NOW) is None
    assert parse_retry_after("tomorrow", NOW) is None


def test_a_custom_schedule_sets_the_number_of_attempts() -> None:
    policy = RetryPolicy.from_seconds([0.1, 0.2], jitter=0)
    assert policy.max_attempts == 3
    assert decide(fails(), 2, NOW, policy).next_attempt_at == NOW + timedelta(seconds=0.2)
    assert decide(fails(), 3, NOW, policy).outcome == "failed"

"""The dev clock (issue 17): honoured only with ENVIRONMENT=dev, forward only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reward_service.clock import ControllableClock
from reward_service.config import Settings
from reward_service.main import create_app
from servicekit.settings import InsecureSettings


def test_dev_clock_control_is_refused_outside_dev() -> None:
    with pytest.raises(InsecureSettings, match="DEV_CLOCK_CONTROL"):
        create_app(Settings(environment="production", dev_clock_control=True))
    assert isinstance(
        create_app(Settings(environment="dev", dev_clock_control=True)).state.clock,
        ControllableClock,
    )
    # (a production app needs its own privacy key, not the dev default)
    production = Settings(environment="production", privacy_hash_key="a-real-key-" + "x" * 16)
    assert not isinstance(create_app(production).state.clock, ControllableClock)


def test_the_controllable_clock_only_moves_forward() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = ControllableClock(lambda: start)
    clock.advance(timedelta(days=30))
    assert clock() == start + timedelta(days=30)
    for backwards in (timedelta(0), timedelta(seconds=-1)):
        with pytest.raises(ValueError):
            clock.advance(backwards)
    assert clock() == start + timedelta(days=30)

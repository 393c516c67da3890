from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from notification_service.webhooks import domain
from servicekit.problems import InvalidInput


@pytest.mark.parametrize(
    ("event_types", "event_type", "expected"),
    [
        ([], "reward.available.v1", True),
        (["*"], "conversion.attributed.v1", True),
        (["reward.available.v1"], "reward.available.v1", True),
        (["reward.available.v1"], "reward.pending.v1", False),
        (["reward.*"], "reward.pending.v1", True),
        (["reward.*"], "conversion.attributed.v1", False),
        (["reward.available.*"], "reward.available.v1", True),
        (["rew.*"], "reward.pending.v1", False),
        (["conversion.attributed.v1", "reward.*"], "reward.available.v1", True),
    ],
)
def test_filter_matching(event_types: list[str], event_type: str, expected: bool) -> None:
    assert domain.matches(event_types, event_type) is expected


def test_filters_are_checked_against_delivered_types() -> None:
    assert domain.normalize_event_types([" reward.* ", "reward.*", "*"]) == ["reward.*", "*"]
    assert domain.normalize_event_types([]) == []
    for bad in ("reward.availble.v1", "refund.*", "Reward.*", "reward.*.v1", "", "a b"):
        with pytest.raises(InvalidInput) as err:
            domain.normalize_event_types([bad])
        assert err.value.field == "/event_types"


def test_secret_format() -> None:
    secret = domain.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert domain.new_secret() != secret


def test_body_is_the_standard_webhooks_shape() -> None:
    at = datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    body = domain.render_body("reward.available.v1", at, {"reward_id": "rwd_1"}, "acme")
    assert json.loads(body) == {
        "type": "reward.available.v1",
        "timestamp": "2026-03-01T12:00:00Z",
        "data": {"reward_id": "rwd_1", "tenant_id": "acme"},
    }
    assert " " not in body  # compact: what is signed is what is sent, byte for byte


def test_truncate() -> None:
    assert domain.truncate(None, 3) is None
    assert domain.truncate("abc", 3) == "abc"
    assert domain.truncate("abcdef", 3) == "abc"


def test_an_endpoint_without_a_filter_gets_the_reward_lifecycle_and_an_empty_one_is_refused() -> (
    None
):
    assert domain.endpoint_filter(None) == ["reward.*"]
    assert domain.endpoint_filter(["*"]) == ["*"]
    assert domain.endpoint_filter(["reward.available.v1"]) == ["reward.available.v1"]
    with pytest.raises(InvalidInput) as err:
        domain.endpoint_filter([])
    assert err.value.field == "/event_types"
    default = domain.endpoint_filter(None)
    assert domain.matches(default, "reward.available.v1")
    for unwanted in ("advocate.updated.v1", "conversion.attributed.v1", "code.created.v1"):
        assert not domain.matches(default, unwanted)

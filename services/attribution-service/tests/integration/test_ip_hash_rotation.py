"""IP_HASH_KEY rotation overlap (issue 19): while IP_HASH_PREVIOUS_KEY holds the key being
replaced, the advocate's IP address and device hashed under the old key before the rotation
still match the same address and device under the new one (self-referral's network check);
without the overlap they would not."""

from __future__ import annotations

from typing import Any

import pytest

from attribution_service.main import create_app
from devstack.testing import eventually, serve_in_process

from .conftest import Env, link_facts
from .test_click_intake import _scalar
from .test_screening_reviews_refunds import _decided

pytestmark = pytest.mark.integration
NEW_KEY = "a-fresh-ip-hash-key-after-rotation"
IP, DEVICE = "203.0.113.7", "device-ann-phone"


def _network(conv: dict[str, Any]) -> dict[str, Any]:
    checks: dict[str, Any] = {c["check"]: c for c in conv["explanation"]["checks"]}
    return checks["self_referral"]


async def test_hashes_under_the_old_key_match_during_the_overlap(env: Env) -> None:
    await link_facts(env.publish)
    # The code is known before the friends convert: a conversion that waits for its evidence is
    # decided later from its stored row, which holds the hash under the current key only.
    await eventually(lambda: _scalar(env.ns.database_url, "SELECT count(*) = 1 FROM codes"), 30)
    # Before the rotation: the advocate buys from one address and one device (the service
    # runs with the old key).
    own = await _decided(env, {"type": "signup", "customer_id": "cus_adv", "ip": IP})
    own_device = await _decided(
        env,
        {
            "type": "purchase",
            "customer_id": "cus_adv",
            "order_id": "o_adv",
            "amount": "10.00",
            "currency": "USD",
            "device_id": DEVICE,
        },
    )
    assert own["status"] == own_device["status"] == "organic"
    old_key = env.settings.ip_hash_key

    async def friend(settings_update: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        settings = env.settings.model_copy(update={"run_consumers": False, **settings_update})
        async with serve_in_process(create_app(settings), env.key) as client:
            return await _decided(
                Env(client, env.publish, env.ns, env.other_key, settings, env.key),
                {"code": "ANN123", **body},
            )

    # After it, within the overlap: a "friend" on the advocate's address, then on their device.
    overlap = {"ip_hash_key": NEW_KEY, "ip_hash_previous_key": old_key}
    same_ip = await friend(overlap, {"type": "signup", "customer_id": "cus_f1", "ip": IP})
    assert _network(same_ip)["outcome"] == "fail", same_ip["explanation"]
    assert "IP hash" in _network(same_ip)["detail"]
    same_device = await friend(
        overlap, {"type": "signup", "customer_id": "cus_f2", "device_id": DEVICE}
    )
    assert (
        _network(same_device)["outcome"] == "fail" and "device" in _network(same_device)["detail"]
    )

    # Without the overlap the old hashes no longer match: what the previous key is for.
    no_overlap = {"ip_hash_key": NEW_KEY, "ip_hash_previous_key": None}
    lost = await friend(no_overlap, {"type": "signup", "customer_id": "cus_f3", "ip": IP})
    assert _network(lost)["outcome"] == "pass", lost["explanation"]

"""Released after the hold, then refunded, through the HTTP APIs of a started stack (issue 17:
holds are whole days and there was no way to move time in a local run). reward-service's dev
clock (DEV_CLOCK_CONTROL, which devstack sets) is moved past a 14-day hold; the purchase's
refund then claws the released reward back, and the ledger verifies clean."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devstack import services
from devstack.pytest_plugin import Namespace
from devstack.testing import eventually, new_api_key

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

HOLD_DAYS = 14


@pytest.fixture
async def urls(namespace: Namespace, tmp_path: Any) -> AsyncIterator[tuple[dict[str, str], str]]:
    key, entry = new_api_key("acme")
    cfg = namespace.stack_config([entry], tmp_path / "logs")
    await asyncio.to_thread(services.migrate_here, cfg)
    running = services.start(cfg)
    try:
        # a shared machine under load starts four services slowly
        await asyncio.to_thread(services.wait_ready, running, 240)
        yield {s.definition.name: s.url for s in running}, key
    finally:
        await asyncio.to_thread(services.stop, running)


async def test_a_released_reward_refunded_is_clawed_back_and_the_ledger_verifies(
    urls: tuple[dict[str, str], str],
) -> None:
    stack, key = urls
    link, attribution, reward = (
        stack[n] for n in ("link-service", "attribution-service", "reward-service")
    )
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
        r = await http.post(
            f"{link}/v1/programs",
            json={"name": "Give 20", "landing_url": "https://shop.example.com"},
        )
        assert r.status_code == 201, r.text
        program = r.json()["id"]
        rule = {
            "advocate_reward": {"amount_minor": 2000, "currency": "USD"},
            "trigger": "first_purchase",
            "hold_days": HOLD_DAYS,
        }

        async def rule_saved() -> bool:  # the program reaches reward-service as an event
            r = await http.put(f"{reward}/v1/programs/{program}/reward-rule", json=rule)
            assert r.status_code in (200, 404, 409), r.text
            return r.status_code == 200

        await eventually(rule_saved)
        r = await http.post(
            f"{link}/v1/programs/{program}/advocates", json={"customer_id": "cus_ann"}
        )
        assert r.status_code == 201, r.text
        advocate, code = r.json()["id"], r.json()["code"]

        async def signed_up() -> bool:  # the code reaches attribution-service as an event
            r = await http.post(
                f"{attribution}/v1/conversions",
                json={"type": "signup", "customer_id": "cus_bob", "code": code},
            )
            return r.status_code in (200, 201, 202)

        await eventually(signed_up)
        r = await http.post(
            f"{attribution}/v1/conversions",
            json={
                "type": "purchase",
                "customer_id": "cus_bob",
                "order_id": "ord_1",
                "amount": "59.90",
                "currency": "USD",
                "code": code,
            },
            headers={"Idempotency-Key": "ord_1"},
        )
        # 202 while the code is still on its way to attribution-service: decided when it arrives
        assert r.status_code in (201, 202), r.text
        conversion = r.json()["id"]

        async def balance() -> dict[str, Any]:
            r = await http.get(f"{reward}/v1/accounts/{advocate}/balance")
            assert r.status_code == 200, r.text
            [usd] = r.json()["balances"] or [{}]
            return dict(usd)

        held = await eventually(lambda: _when(balance(), lambda b: b.get("pending_minor")))
        assert (held["available_minor"], held["pending_minor"]) == (0, 2000)

        # a day short of the hold: nothing is released
        r = await http.post(
            f"{reward}/v1/dev/clock/advance", json={"advance_seconds": (HOLD_DAYS - 1) * 86400}
        )
        assert r.status_code == 200, r.text
        assert r.json()["released"] == 0
        # past it: released at once, in the answer's transaction
        r = await http.post(f"{reward}/v1/dev/clock/advance", json={"advance_seconds": 2 * 86400})
        assert r.status_code == 200, r.text
        moved = r.json()
        assert moved["released"] == 1 and moved["offset_seconds"] == (HOLD_DAYS + 1) * 86400
        assert [m["advance_seconds"] for m in moved["moves"]] == [
            2 * 86400,
            (HOLD_DAYS - 1) * 86400,
        ]
        assert all(m["key_id"] for m in moved["moves"])  # on record, with the key
        released = await balance()
        assert (released["available_minor"], released["pending_minor"]) == (2000, 0)

        # the purchase is refunded after the release: the reward is clawed back
        r = await http.post(
            f"{attribution}/v1/conversions/{conversion}/refunds",
            json={"reason": "returned"},
            headers={"Idempotency-Key": "rf_1"},
        )
        assert r.status_code == 201, r.text
        clawed = await eventually(lambda: _when(balance(), lambda b: b.get("available_minor") == 0))
        assert clawed["pending_minor"] == 0 and clawed["debt_minor"] == 0

        r = await http.get(f"{reward}/v1/accounts/{advocate}/statement")
        assert r.status_code == 200, r.text
        legs = [e["leg"] for e in r.json()["items"]]
        assert "release" in legs and "clawback" in legs and "void" not in legs, legs
        r = await http.get(f"{reward}/v1/admin/ledger/verify")
        assert r.status_code == 200 and r.json()["ok"], r.text


async def _when(value: Any, test: Any) -> Any:
    got = await value
    return got if test(got) else None

"""An experiment's winner becomes the program's reward rule, the four services as real
processes: a program paying the advocate 10 USD runs "give 10" against "give 20, get 20";
promoting "twenty" (forced: too few advocates for a readout; unforced it is refused) reaches
reward-service through reward_rule.promoted.v1, which writes it as the rule's next version, and
the next referred purchase pays both sides 20 USD. Promoting again changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import services
from devstack.pytest_plugin import Namespace
from devstack.testing import eventually, new_api_key

# under load the four processes take long to start (the privacy e2e allows as much)
pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]


@dataclass
class Stack:
    urls: dict[str, str]
    headers: dict[str, str]


@pytest.fixture
async def stack(namespace: Namespace, tmp_path: Path) -> AsyncIterator[Stack]:
    key, entry = new_api_key("acme")
    cfg = namespace.stack_config([entry], tmp_path / "logs")
    await asyncio.to_thread(services.migrate_here, cfg)
    running = services.start(cfg)
    try:
        # the machine may be loaded (shared CI runners): start-up gets more than the default
        await asyncio.to_thread(services.wait_ready, running, 240.0)
        yield Stack({s.definition.name: s.url for s in running}, {"Authorization": f"Bearer {key}"})
    finally:
        await asyncio.to_thread(services.stop, running)


def _side(minor: int) -> dict[str, Any]:
    return {"trigger": "first_purchase", "amount": {"amount_minor": minor, "currency": "USD"}}


async def test_the_promoted_winner_rewards_the_next_conversion(stack: Stack) -> None:
    link, attribution, reward = (
        stack.urls[n] for n in ("link-service", "attribution-service", "reward-service")
    )
    async with httpx.AsyncClient(headers=stack.headers, timeout=10) as http:

        async def ok(r: Any, status: int = 200) -> Any:
            response = await r
            assert response.status_code == status, response.text
            return response.json()

        p = await ok(http.post(f"{link}/v1/programs", json={
            "name": "Give 10", "landing_url": "https://shop.example.com"}), 201)  # fmt: skip
        program = p["id"]
        rule = await ok(http.put(f"{reward}/v1/programs/{program}/reward-rule",
                                 json={"advocate": _side(1000)}))  # fmt: skip
        assert rule["version"] == 1

        async def advocate(customer: str) -> dict[str, Any]:
            url = f"{link}/v1/programs/{program}/advocates"
            a: dict[str, Any] = await ok(http.post(url, json={"customer_id": customer}), 201)
            return a

        ann = await advocate("cus_ann")
        body = {"name": "give 10 vs give 20 get 20", "kind": "reward_rule", "variants": [
            {"key": "ten", "weight": 1, "config": {"advocate": _side(1000)}},
            {"key": "twenty", "weight": 1,
             "config": {"advocate": _side(2000), "friend": _side(2000)}}]}  # fmt: skip

        async def created() -> Any:  # attribution learns of the program through Kafka
            r = await http.post(f"{attribution}/v1/programs/{program}/experiments", json=body)
            assert r.status_code in (201, 404), r.text
            return r.json() if r.status_code == 201 else None

        exp = await eventually(created, 30)
        path = f"{attribution}/v1/programs/{program}/experiments/{exp['id']}"
        await ok(http.post(f"{path}/start"))

        # no winner is known with one advocate: refused unless forced
        r = await http.post(f"{path}/promote", json={"variant": "twenty"})
        assert r.status_code == 409 and r.json()["field"] == "/variant", r.text
        ended = await ok(http.post(f"{path}/promote", json={"variant": "twenty", "force": True}))
        assert (ended["status"], ended["winner"]) == ("ended", "twenty")
        again = await ok(http.post(f"{path}/promote", json={"variant": "twenty", "force": True}))
        assert again["ended_at"] == ended["ended_at"]

        async def promoted() -> Any:
            r = await ok(http.get(f"{reward}/v1/programs/{program}/reward-rule"))
            return r if r["version"] == 2 else None

        rule = await eventually(promoted, 30)
        assert rule["promoted_from"]["experiment_id"] == exp["id"]
        assert rule["promoted_from"]["variant"] == "twenty" and rule["promoted_from"]["forced"]
        assert rule["advocate"]["amount"]["fixed"] == rule["friend"]["amount"]["fixed"] == 2000

        # the split has stopped: an advocate enrolled now gets the winner
        bea = await advocate("cus_bea")
        assignment = await ok(http.get(f"{path}/assignments/{bea['id']}"))
        assert assignment["variant"] == "twenty"

        async def purchase(code: str, friend: str, order: str) -> None:
            body = {"type": "purchase", "customer_id": friend, "order_id": order,
                    "amount": "59.90", "currency": "USD", "code": code}  # fmt: skip

            async def decided() -> Any:
                r = await http.post(
                    f"{attribution}/v1/conversions", json=body, headers={"Idempotency-Key": order}
                )
                assert r.status_code in (200, 201, 202), r.text
                return r.json() if r.json()["status"] != "pending" else None

            got = await eventually(decided, 30)  # the code arrives through Kafka
            assert got["status"] == "attributed", got

        await purchase(bea["code"], "cus_bob", "ord_1")
        await purchase(ann["code"], "cus_cat", "ord_2")

        async def available(holder: str) -> int:
            b = await ok(http.get(f"{reward}/v1/accounts/{holder}/balance"))
            return sum(x["available_minor"] + x["pending_minor"] for x in b["balances"])

        async def paid() -> bool:
            got = [await available(h) for h in (bea["id"], "cus_bob", ann["id"], "cus_cat")]
            return got == [2000, 2000, 2000, 2000]

        await eventually(paid, 60)
        # promoting again wrote no third version
        final = await ok(http.get(f"{reward}/v1/programs/{program}/reward-rule"))
        assert final["version"] == 2

"""Growth analytics against the ledger, the four services as real processes: two programs in
two currencies, three referred purchases, one of them refunded (its rewards clawed back). The
reward cost attribution-service's analytics folded from reward.events equals, per currency,
what reward-service's ledger holds for the same holders, both read over HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import services
from devstack.pytest_plugin import Namespace
from devstack.testing import eventually, new_api_key

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


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
        # a shared machine under load starts four services slowly
        await asyncio.to_thread(services.wait_ready, running, 240)
        yield Stack({s.definition.name: s.url for s in running}, {"Authorization": f"Bearer {key}"})
    finally:
        await asyncio.to_thread(services.stop, running)


async def test_reward_cost_reconciles_with_the_ledger(stack: Stack) -> None:
    link, attribution, reward = (
        stack.urls[n] for n in ("link-service", "attribution-service", "reward-service")
    )
    async with httpx.AsyncClient(headers=stack.headers, timeout=10) as http:

        async def ok(r: Any, status: int = 200) -> Any:
            response = await r
            assert response.status_code == status, response.text
            return response.json()

        async def program(currency: str, advocate_minor: int, friend_minor: int) -> str:
            p = await ok(
                http.post(f"{link}/v1/programs", json={
                    "name": f"Give {currency}", "landing_url": "https://shop.example.com"}),
                201,
            )  # fmt: skip

            def side(minor: int) -> dict[str, Any]:
                return {"trigger": "first_purchase",
                        "amount": {"amount_minor": minor, "currency": currency}}  # fmt: skip

            await ok(http.put(f"{reward}/v1/programs/{p['id']}/reward-rule", json={
                "advocate": side(advocate_minor), "friend": side(friend_minor)}))  # fmt: skip
            return str(p["id"])

        async def advocate(program_id: str, customer: str) -> dict[str, Any]:
            a: dict[str, Any] = await ok(
                http.post(f"{link}/v1/programs/{program_id}/advocates", json={
                    "customer_id": customer, "name": "Ann Smith"}),
                201,
            )  # fmt: skip
            return a

        usd = await program("USD", 2000, 1000)
        eur = await program("EUR", 1500, 500)
        ann, eve = await advocate(usd, "cus_ann"), await advocate(eur, "cus_eve")

        async def purchase(code: str, friend: str, order: str, amount: str, cur: str) -> str:
            body = {"type": "purchase", "customer_id": friend, "order_id": order,
                    "amount": amount, "currency": cur, "code": code}  # fmt: skip

            async def decided() -> Any:
                r = await http.post(
                    f"{attribution}/v1/conversions", json=body, headers={"Idempotency-Key": order}
                )
                assert r.status_code in (200, 201, 202), r.text
                return r.json() if r.json()["status"] != "pending" else None

            got = await eventually(decided, 30)  # the code arrives through Kafka
            assert got["status"] == "attributed", got
            return str(got["id"])

        await purchase(ann["code"], "cus_bob", "ord_1", "59.90", "USD")
        refunded = await purchase(ann["code"], "cus_cat", "ord_2", "30.00", "USD")
        await purchase(eve["code"], "cus_dan", "ord_3", "80.00", "EUR")

        holders = [ann["id"], "cus_bob", "cus_cat", eve["id"], "cus_dan"]

        async def ledger() -> Counter[str]:
            """What the ledger holds per unit for these holders (available + pending +
            in payout - debt), over HTTP."""
            total: Counter[str] = Counter()
            for h in holders:
                body = await ok(http.get(f"{reward}/v1/accounts/{h}/balance"))
                for b in body["balances"]:
                    total[b["unit"]] += (
                        b["available_minor"] + b["pending_minor"] + b["in_payout_minor"]
                        - b["debt_minor"]
                    )  # fmt: skip
            return total

        # all six rewards booked, then the refund takes cat's and ann's second reward back
        await eventually(lambda: _holds(ledger(), {"USD": 6000, "EUR": 2000}), 60)
        await ok(
            http.post(f"{attribution}/v1/conversions/{refunded}/refunds", json={
                "refund_id": "rf_1"}),
            201,
        )  # fmt: skip
        await eventually(lambda: _holds(ledger(), {"USD": 3000, "EUR": 2000}), 60)

        today = datetime.now(UTC).date()
        span = {"from": str(today - timedelta(days=1)), "to": str(today), "interval": "month"}

        async def cost(program_id: str) -> dict[str, Any]:
            body = await ok(http.get(f"{attribution}/v1/programs/{program_id}/analytics",
                                     params=span))  # fmt: skip
            return {c["unit"]: c for c in body["totals"]["reward_cost"]}

        async def folded() -> bool:
            # every fold this test reads: the rewards (from reward.events) and the refund
            # (this service's own event, folded by its background worker)
            u, e = await cost(usd), await cost(eur)
            body = await ok(http.get(f"{attribution}/v1/programs/{usd}/analytics", params=span))
            refunded = [r["refunded_minor"] for r in body["totals"]["revenue"]]
            return (
                u.get("USD", {}).get("net") == 3000
                and e.get("EUR", {}).get("net") == 2000
                and refunded == [3000]
            )

        await eventually(folded, 60)
        held = await ledger()
        u, e = (await cost(usd))["USD"], (await cost(eur))["EUR"]
        assert (u["issued"], u["voided"], u["clawed_back"], u["net"]) == (6000, 0, 3000, 3000)
        assert (e["issued"], e["voided"], e["clawed_back"], e["net"]) == (2000, 0, 0, 2000)
        assert {"USD": u["net"], "EUR": e["net"]} == dict(held)

        funnel = await ok(http.get(f"{attribution}/v1/programs/{usd}/analytics", params=span))
        totals = funnel["totals"]
        assert (totals["advocates_enrolled"], totals["first_purchases"]) == (1, 2)
        assert totals["revenue"] == [{"currency": "USD", "purchases": 2, "gross_minor": 8990,
                                      "refunded_minor": 3000, "net_minor": 5990}]  # fmt: skip
        board = await ok(http.get(f"{attribution}/v1/programs/{usd}/leaderboard"))
        assert [(e["advocate_id"], e["display_name"], e["score"]) for e in board["entries"]] == [
            (ann["id"], "Ann S.", 2)]  # fmt: skip


async def _holds(value: Any, expected: dict[str, int]) -> bool:
    return dict(await value) == expected

"""Customer value and CLV per program and per cohort (the referring advocate's enrollment
week), in whole minor units and Decimals, through HTTP on real Kafka + Postgres: purchases
through POST /v1/conversions, referred by two advocates enrolled in different weeks and not
referred, in two currencies, against a hand computation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devstack.testing import eventually
from referral_events.contracts import link as ev

from .conftest import Env
from .test_analytics import _get

pytestmark = pytest.mark.integration


def _monday(d: datetime) -> str:
    return str((d - timedelta(days=d.weekday())).date())


async def test_clv_per_program_and_cohort_matches_a_hand_computation(env: Env) -> None:
    x = (datetime.now(UTC) - timedelta(days=70)).replace(hour=12, minute=0, second=0, microsecond=0)
    w1, w2 = x - timedelta(days=20), x - timedelta(days=10)  # two enrollment weeks
    await env.publish("link.events", ev.ProgramCreated(
        program_id="prg_k", name="p", status="active", landing_url="https://s.example",
        allowed_domains=["s.example"]))  # fmt: skip
    for adv, code, at in [("adv_k1", "KAY1", w1), ("adv_k2", "KAY2", w2)]:
        await env.publish("link.events", ev.AdvocateEnrolled(
            advocate_id=adv, program_id="prg_k", customer_id=f"cus_{adv}"), time=at)  # fmt: skip
        await env.publish(
            "link.events", ev.CodeCreated(code=code, advocate_id=adv, program_id="prg_k")
        )

    async def buy(who: str, order: str, minor: int, cur: str, day: int, code: str = "") -> None:
        body = {"type": "purchase", "customer_id": who, "order_id": order,
                "amount_minor": minor, "currency": cur,
                "occurred_at": (x + timedelta(days=day)).isoformat()}  # fmt: skip
        if code:
            body["code"] = code

        async def decided() -> Any:
            r = await env.client.post(
                "/v1/conversions", json=body, headers={"Idempotency-Key": order}
            )
            assert r.status_code in (200, 201, 202), r.text
            return r.json() if r.json()["status"] != "pending" else None

        await eventually(decided, 30)  # the codes arrive through Kafka

    await buy("cus_f1", "o1", 10000, "USD", 0, "KAY1")  # cohort w1
    await buy("cus_f1", "o2", 5001, "USD", 5)  # f1 stays attached to adv_k1
    await buy("cus_f2", "o3", 3000, "USD", 2, "KAY2")  # cohort w2
    await buy("cus_f2", "o4", 1000, "USD", 40)  # after the window: only its lifespan grows
    await buy("cus_f3", "o5", 4000, "EUR", 3, "KAY2")  # cohort w2, in euros
    await buy("cus_o1", "o6", 2000, "USD", 1)  # never referred

    window = {"from": str(x.date()), "to": str((x + timedelta(days=9)).date())}

    async def folded() -> Any:
        body = await _get(env, "/v1/programs/prg_k/analytics/customer-value", **window)
        # every referral folded (the worker folds this service's own events a moment later;
        # until then a customer's cohort is not known: null)
        cohorts = sum(c["week"] is not None for v in body["currencies"] for c in v["cohorts"])
        usd = [c for c in body["currencies"] if c["currency"] == "USD"]
        others = usd[0]["others"]["customers"] if usd else 0
        return body if cohorts == 3 and others == 1 else None

    body = await eventually(folded, 60)
    assert body["window_days"] == 10
    eur, usd = body["currencies"]
    assert (eur["currency"], usd["currency"]) == ("EUR", "USD")

    def value(customers: int, purchases: int, revenue: int, life: str, aov: int, per: str,
              cv: int, clv: int) -> dict[str, Any]:  # fmt: skip
        return {"customers": customers, "purchases": purchases, "revenue_minor": revenue,
                "lifespan_days": life, "aov_minor": aov, "purchases_per_customer": per,
                "customer_value_minor": cv, "clv_minor": clv}  # fmt: skip

    # cohort w1: f1, 2 purchases for 150.01 (AOV 75.005 -> 75.01), first to last purchase 5
    # days: a lifespan of 6 days, under one 10-day window, so CLV = value = 150.01
    # cohort w2: f2, one purchase of 30.00 in the window; their last purchase (day 40) makes a
    # lifespan of 39 days: 3.9 windows, CLV = 30.00 x 3.9 = 117.00
    assert usd["cohorts"] == [
        {"week": _monday(w1), "referred": value(1, 2, 15001, "6.0000", 7501, "2.0000", 15001,
                                                15001)},
        {"week": _monday(w2), "referred": value(1, 1, 3000, "39.0000", 3000, "1.0000", 3000,
                                                11700)},
    ]  # fmt: skip
    # the program's referred customers: the cohorts added up. 180.01 over 3 purchases (AOV
    # 60.0033 -> 60.00) and 2 customers (1.5 each): value 90.005 -> 90.01; mean lifespan
    # (6 + 39) / 2 = 22.5 days, 2.25 windows: CLV = 90.005 x 2.25 = 202.51125 -> 202.51
    assert usd["exact"]["referred"] == value(2, 3, 18001, "22.5000", 6000, "1.5000", 9001, 20251)
    # beside the merchant's never-referred customers in the same window: o1, one 20.00 order
    assert usd["exact"]["others"] == value(1, 1, 2000, "1.0000", 2000, "1.0000", 2000, 2000)
    # the float form agrees
    assert usd["referred"]["customer_value_minor"] == pytest.approx(9000.5)
    assert usd["referred"]["clv_minor"] == pytest.approx(20251.125)
    assert eur["cohorts"] == [
        {"week": _monday(w2), "referred": value(1, 1, 4000, "1.0000", 4000, "1.0000", 4000, 4000)}
    ]  # fmt: skip
    assert eur["exact"]["others"]["customers"] == 0

"""Every collection of reward-service has a cursor-paginated list, found from the route table
(every GET answering a `Page`; every POST that creates must have one), and each list walks
every item that existed exactly once while items are being added. Capped rewards are listed
with their reason, and cap usage says what is used and what remains."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devstack.testing import Collection, walk_while_inserting
from referral_events import new_event
from referral_events.contracts.attribution import ConversionAttributed
from reward_service.config import Settings
from reward_service.earning import handlers as earning
from reward_service.main import create_app
from reward_service.programs import repository as programs
from servicekit.db import all_tenants
from servicekit.pagination import collections, unlisted_creates

from .test_reward_flow import Env, env, heard_of  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

NOT_COLLECTIONS: dict[str, str] = {}
_n = itertools.count()

CASH_ON_SIGNUP = {
    "advocate": {
        "trigger": "signup",
        "kind": "cash",
        "amount": {"amount_minor": 1000, "currency": "USD"},
    },
}

CREDIT_ON_SIGNUP = {
    "advocate_reward": {"amount_minor": 1000, "currency": "USD"},
    "trigger": "signup",
}


def _signup(program: str, advocate: str, at: datetime) -> ConversionAttributed:
    n = next(_n)
    return ConversionAttributed(
        conversion_id=f"cnv_{n}",
        referral_id=f"ref_{n}",
        program_id=program,
        advocate_id=advocate,
        friend_customer_id=f"cus_{n}",
        conversion_type="signup",
        is_first_purchase=False,
        occurred_at=at,
        evidence="code",
    )


def _lists(ctx: Env, client: httpx.AsyncClient) -> dict[str, Collection]:
    async def earn(program: str, advocate: str) -> str:
        """The advocate earns the program's signup reward (as the consumer would): its id."""
        payload = _signup(program, advocate, ctx.clock.now)
        event = new_event(payload, source="/test", tenant_id="acme")
        with all_tenants():  # as the consumer acts
            async with ctx.runtime.transaction() as conn:
                await earning.on_conversion_attributed(conn, event, payload)
                reward_id: str = await conn.fetchval(
                    "SELECT id FROM rewards WHERE conversion_id = $1", payload.conversion_id
                )
        return reward_id

    async def program(rule: dict[str, Any] = CASH_ON_SIGNUP) -> dict[str, str]:
        p = f"prg_{next(_n)}"
        with all_tenants():  # as its program.created.v1's consumer would
            async with ctx.runtime.transaction() as conn:
                await programs.add_program(conn, "acme", p)
        r = await client.put(f"/v1/programs/{p}/reward-rule", json=rule)
        assert r.status_code == 200, r.text
        return {"program_id": p}

    async def reward(p: dict[str, str]) -> str:
        return await earn(p["program_id"], f"adv_{next(_n)}")

    async def holder() -> dict[str, str]:
        p = await program(CREDIT_ON_SIGNUP)
        h = f"adv_{next(_n)}"
        for _ in range(3):
            await earn(p["program_id"], h)
        return {"holder_id": h, "program_id": p["program_id"]}

    async def statement_line(p: dict[str, str]) -> str:
        """The holder earns once more: one line on their statement (no hold: straight to
        available), named by its transfer."""
        reward_id = await earn(p["program_id"], p["holder_id"])
        async with ctx.runtime.transaction() as conn:
            transfer: str = await conn.fetchval(
                "SELECT id::text FROM transfers WHERE reward_id = $1", reward_id
            )
        return transfer

    async def redemption(p: dict[str, str]) -> str:
        r = await client.post(
            f"/v1/accounts/{p['holder_id']}/redemptions",
            json={"amount_minor": 1, "unit": "USD"},
            headers={"Idempotency-Key": f"k{next(_n)}"},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def payout(p: dict[str, str]) -> str:
        await earn(p["program_id"], f"adv_{next(_n)}")  # fresh cash for the batch
        r = await client.post("/v1/payouts", json={"currency": "USD", "threshold_minor": 1})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def pool(p: dict[str, str]) -> str:
        body = {"name": f"pool {next(_n)}", "low_threshold": 0, "codes": [f"C{next(_n)}"]}
        r = await client.post(f"/v1/programs/{p['program_id']}/coupon-pools", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    return {
        "/v1/rewards": Collection(reward, program, {"program_id": "{program_id}"}),
        "/v1/redemptions": Collection(redemption, holder),
        "/v1/accounts/{holder_id}/redemptions": Collection(redemption, holder),
        "/v1/accounts/{holder_id}/statement": Collection(
            statement_line, holder, id_field="transfer_id"
        ),
        "/v1/payouts": Collection(payout, program),
        "/v1/programs/{program_id}/coupon-pools": Collection(pool, program),
    }


def test_every_collection_has_a_list_and_a_walk_below() -> None:
    app = create_app(Settings(environment="dev"))
    assert unlisted_creates(app, NOT_COLLECTIONS) == []
    assert collections(app) == sorted(_lists(None, None))  # type: ignore[arg-type]


@pytest.mark.parametrize("path", sorted(_lists(None, None)))  # type: ignore[arg-type]
async def test_each_list_walks_every_item_once_under_inserts(env: Env, path: str) -> None:  # noqa: F811
    async with env.serve() as client:
        await walk_while_inserting(client, path, _lists(env, client)[path])


DROPBOX_RULE = {
    "advocate": {"trigger": "signup", "amount": {"quantity": 500, "unit": "MB"}},
    "caps": [
        {"period": "lifetime", "max_amount": 1200},
        {"period": "month", "max_count": 5},
    ],
    "budget": {"amount": 5000, "unit": "MB"},
}


async def test_capped_rewards_are_listed_and_cap_usage_shows_what_remains(env: Env) -> None:  # noqa: F811
    await heard_of(env.db, "prg_cap")
    async with env.serve() as client:
        r = await client.put("/v1/programs/prg_cap/reward-rule", json=DROPBOX_RULE)
        assert r.status_code == 200, r.text
        r = await client.get("/v1/programs/prg_cap/cap-usage", params={"advocate_id": "adv_c"})
        assert r.status_code == 200, r.text
        month = env.clock.now.astimezone(UTC).strftime("%Y-%m")
        assert r.json()["caps"] == [
            {
                "period": "lifetime",
                "period_key": "lifetime",
                "unit": "MB",
                "max_count": None,
                "max_amount_minor": 1200,
                "used_count": 0,
                "used_amount_minor": 0,
                "remaining_count": None,
                "remaining_amount_minor": 1200,
            },
            {
                "period": "month",
                "period_key": month,
                "unit": "MB",
                "max_count": 5,
                "max_amount_minor": None,
                "used_count": 0,
                "used_amount_minor": 0,
                "remaining_count": 5,
                "remaining_amount_minor": None,
            },
        ]
        for _ in range(4):  # 500 + 500 + 200 (capped) + 0 (capped)
            payload = _signup("prg_cap", "adv_c", env.clock.now + timedelta(seconds=1))
            event = new_event(payload, source="/test", tenant_id="acme")
            async with env.runtime.transaction() as conn:
                await earning.on_conversion_attributed(conn, event, payload)

        r = await client.get("/v1/rewards", params={"advocate_id": "adv_c"})
        listed = [(i["amount_minor"], i["requested_minor"], i["state"]) for i in r.json()["items"]]
        assert listed == [
            (500, 500, "available"),
            (500, 500, "available"),
            (200, 500, "available"),
            (0, 500, "capped"),
        ]
        r = await client.get("/v1/rewards", params={"advocate_id": "adv_c", "state": "capped"})
        [capped] = r.json()["items"]
        assert capped["capped_reason"] == "advocate_amount_cap"
        assert capped["capped_period"] == "lifetime"

        usage = (
            await client.get("/v1/programs/prg_cap/cap-usage", params={"advocate_id": "adv_c"})
        ).json()
        lifetime, this_month = usage["caps"]
        assert (lifetime["used_amount_minor"], lifetime["remaining_amount_minor"]) == (1200, 0)
        assert (this_month["used_count"], this_month["remaining_count"]) == (3, 2)
        assert usage["budget"] == {
            "unit": "MB",
            "budget_minor": 5000,
            "spent_minor": 1200,
            "remaining_minor": 3800,
        }
        program_only = (await client.get("/v1/programs/prg_cap/cap-usage")).json()
        assert program_only["caps"] == [] and program_only["budget"]["spent_minor"] == 1200
        r = await client.get("/v1/programs/prg_nope/cap-usage")
        assert r.status_code == 404
        r = await client.get("/v1/rewards", headers={"Authorization": f"Bearer {env.other_key}"})
        assert r.json()["items"] == []

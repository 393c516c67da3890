"""Every collection of attribution-service has a cursor-paginated list, found from the route
table (every GET answering a `Page`; every POST that creates must have one), and each list
walks every item that existed exactly once while items are being added. And the lookups
support asks for: a conversion by order id, everything about one customer in one program."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from attribution_service.config import Settings
from attribution_service.main import create_app
from devstack.testing import Collection, eventually, walk_while_inserting
from servicekit.pagination import collections, unlisted_creates

from .conftest import Env, link_facts

pytestmark = pytest.mark.integration

# POST routes that answer 201 without creating an item of a collection, and why.
NOT_COLLECTIONS = {
    "/v1/subscriptions/{subscription_id}/cancellation": "one per subscription, not a list",
}
_n = itertools.count()


async def _decided(env: Env, body: dict[str, Any]) -> dict[str, Any]:
    r = await env.client.post("/v1/conversions", json=body)
    assert r.status_code in (201, 202), r.text

    async def decided() -> dict[str, Any] | None:
        got: dict[str, Any] = (await env.client.get(f"/v1/conversions/{r.json()['id']}")).json()
        return got if got["status"] != "pending" else None

    result: dict[str, Any] = await eventually(decided, timeout=60)
    return result


def _lists(env: Env) -> dict[str, Collection]:
    c = env.client if env is not None else None

    async def program() -> dict[str, str]:
        n = next(_n)
        await link_facts(env.publish, program=f"prg_{n}", advocate=f"adv_{n}", code=f"CODE{n}")
        return {"program_id": f"prg_{n}", "code": f"CODE{n}"}

    async def organic(_: dict[str, str]) -> str:
        r = await c.post("/v1/conversions", json={"type": "signup", "customer_id": f"c{next(_n)}"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def referred(p: dict[str, str], email: str = "someone@gmail.com") -> dict[str, Any]:
        # A new advocate each time: one advocate's burst of signups is what velocity checks.
        n = next(_n)
        await link_facts(env.publish, program=p["program_id"], advocate=f"adv_r{n}", code=f"REF{n}")
        body = {"type": "signup", "customer_id": f"f{n}", "code": f"REF{n}", "email": email}
        return await _decided(env, body)

    async def referral(p: dict[str, str]) -> str:
        conversion = await referred(p)
        assert conversion["status"] == "attributed", conversion
        return str(conversion["referral_id"])

    async def review(p: dict[str, str]) -> str:
        conversion = await referred(p, email=f"x{next(_n)}@mailinator.com")
        assert conversion["status"] == "review", conversion
        return str(conversion["id"])

    async def purchase() -> dict[str, str]:
        body = {
            "type": "purchase",
            "customer_id": f"c{next(_n)}",
            "order_id": f"ord_{next(_n)}",
            "amount": "1000.00",
            "currency": "USD",
        }
        r = await c.post("/v1/conversions", json=body)
        assert r.status_code == 201, r.text
        return {"conversion_id": r.json()["id"]}

    async def refund(p: dict[str, str]) -> str:
        url = f"/v1/conversions/{p['conversion_id']}/refunds"
        r = await c.post(url, json={"refund_id": f"r{next(_n)}", "amount": "1.00"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def integration(_: dict[str, str]) -> str:
        body = {"provider": "shopify", "account": f"s{next(_n)}.myshopify.com", "secret": "x" * 16}
        r = await c.post("/v1/integrations", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def experiment(p: dict[str, str]) -> str:
        body = {
            "name": f"e{next(_n)}",
            "kind": "reward_rule",
            "variants": [
                {"key": "a", "weight": 1, "config": {"advocate_reward": {"amount_minor": 1}}},
                {"key": "b", "weight": 1, "config": {"advocate_reward": {"amount_minor": 2}}},
            ],
        }

        async def created() -> Any:
            r = await c.post(f"/v1/programs/{p['program_id']}/experiments", json=body)
            return r if r.status_code == 201 else None  # 404 until the program's copy is here

        r = await eventually(created)
        return str(r.json()["id"])

    return {
        "/v1/conversions": Collection(organic),
        "/v1/referrals": Collection(referral, program, {"program_id": "{program_id}"}),
        "/v1/reviews": Collection(review, program, id_field="conversion_id"),
        "/v1/conversions/{conversion_id}/refunds": Collection(refund, purchase),
        "/v1/integrations": Collection(integration),
        "/v1/programs/{program_id}/experiments": Collection(experiment, program),
    }


def test_every_collection_has_a_list_and_a_walk_below() -> None:
    app = create_app(Settings(environment="dev"))
    assert unlisted_creates(app, NOT_COLLECTIONS) == []
    assert collections(app) == sorted(_lists(None))  # type: ignore[arg-type]


@pytest.mark.parametrize("path", sorted(_lists(None)))  # type: ignore[arg-type]
async def test_each_list_walks_every_item_once_under_inserts(env: Env, path: str) -> None:
    await walk_while_inserting(env.client, path, _lists(env)[path])


async def test_lookups_by_order_id_and_one_customer_in_one_program(env: Env) -> None:
    c = env.client
    await link_facts(env.publish)  # prg_1, adv_1 (customer cus_adv), ANN123
    signup = await _decided(
        env, {"type": "signup", "customer_id": "cus_bob", "code": "ANN123", "email": "b@gmail.com"}
    )
    purchase = await _decided(
        env,
        {
            "type": "purchase",
            "customer_id": "cus_bob",
            "order_id": "ord_77",
            "amount": "59.90",
            "currency": "USD",
        },
    )
    assert signup["status"] == purchase["status"] == "attributed"

    r = await c.get("/v1/conversions", params={"order_id": "ord_77"})
    assert [i["id"] for i in r.json()["items"]] == [purchase["id"]]
    r = await c.get("/v1/conversions", params={"advocate_id": "adv_1", "type": "signup"})
    assert [i["id"] for i in r.json()["items"]] == [signup["id"]]
    r = await c.get("/v1/conversions", params={"code": "ann123"})
    assert [i["id"] for i in r.json()["items"]] == [signup["id"]]
    r = await c.get("/v1/conversions", params={"order_id": "ord_77"}, headers=env.foreign)
    assert r.json()["items"] == []
    r = await c.get("/v1/referrals", params={"advocate_id": "adv_1"})
    assert [i["customer_id"] for i in r.json()["items"]] == ["cus_bob"]

    bob = (await c.get("/v1/programs/prg_1/customers/cus_bob")).json()
    assert bob["referral"]["advocate_id"] == "adv_1" and bob["advocate_ids"] == []
    assert [i["id"] for i in bob["conversions"]["items"]] == [signup["id"], purchase["id"]]
    r = await c.get("/v1/programs/prg_1/customers/cus_bob", params={"limit": 1})
    first = r.json()["conversions"]
    assert [i["id"] for i in first["items"]] == [signup["id"]] and first["next_cursor"]
    rest = await c.get(
        "/v1/conversions",
        params={"program_id": "prg_1", "customer_id": "cus_bob", "cursor": first["next_cursor"]},
    )
    assert [i["id"] for i in rest.json()["items"]] == [purchase["id"]]
    ann = (await c.get("/v1/programs/prg_1/customers/cus_adv")).json()
    assert ann["referral"] is None and ann["advocate_ids"] == ["adv_1"]
    assert (
        await c.get("/v1/programs/prg_1/customers/cus_bob", headers=env.foreign)
    ).status_code == 404
    assert (await c.get("/v1/programs/prg_nope/customers/cus_bob")).status_code == 404
    r = await c.get("/v1/conversions", params={"cursor": "nope"})
    assert r.status_code == 422 and r.json()["field"] == "/cursor"

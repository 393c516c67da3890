"""Issue 23 on the real stack (four processes, real Kafka and Postgres), set up through the HTTP
APIs only: the Dropbox program with two segments (Basic 500 MB per friend up to 16 GB, Plus
1 GB up to 32 GB) gives a Basic advocate 16 GB after 40 referrals, a Plus one 32 GB, and one
upgraded Basic -> Plus after 20 exactly the documented 30,480 MB; the ledger verifies.
Eligibility refuses an enrollment (422 naming the rule) and a friend's country (rejected, the
check named); the advocate's thank-you reaches the merchant's webhook and the email log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack import services
from devstack.pytest_plugin import Namespace
from devstack.testing import eventually, http_receiver, new_api_key, wait_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

MB_BASIC, MB_PLUS = 500, 1024
CAP_BASIC, CAP_PLUS = 16 * 1024, 32 * 1024


@dataclass
class Receiver:
    received: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        self.received.append(json.loads(await request.body()))
        return Response(status_code=204)


@dataclass
class Stack:
    urls: dict[str, str]
    headers: dict[str, str]
    ns: Namespace


@pytest.fixture
async def stack(namespace: Namespace, tmp_path: Any) -> AsyncIterator[Stack]:
    key, entry = new_api_key("acme")
    cfg = namespace.stack_config([entry], tmp_path / "logs")
    await asyncio.to_thread(services.migrate_here, cfg)
    running = services.start(cfg)
    try:
        # a shared machine under load starts four services slowly
        await asyncio.to_thread(services.wait_ready, running, 240)
        yield Stack(
            {s.definition.name: s.url for s in running},
            {"Authorization": f"Bearer {key}"},
            namespace,
        )
    finally:
        await asyncio.to_thread(services.stop, running)
        for log in sorted((tmp_path / "logs").glob("*.log")):
            text = log.read_text()
            if "Traceback" in text:
                print(f"--- {log.name}\n{text[-4000:]}")


def _side(mb: int) -> dict[str, Any]:
    return {"trigger": "signup", "amount": {"quantity": mb, "unit": "MB"}}


DROPBOX = {
    "advocate": _side(MB_BASIC),
    "caps": [{"period": "lifetime", "max_amount": CAP_BASIC}],
    "variants": [
        {
            "segment": "basic",
            "advocate": _side(MB_BASIC),
            "caps": [{"period": "lifetime", "max_amount": CAP_BASIC}],
        },
        {
            "segment": "plus",
            "advocate": _side(MB_PLUS),
            "caps": [{"period": "lifetime", "max_amount": CAP_PLUS}],
        },
    ],
}


async def test_dropbox_by_plan_eligibility_and_thank_yous(stack: Stack) -> None:
    link, attribution, reward, notification = (
        stack.urls[n]
        for n in ("link-service", "attribution-service", "reward-service", "notification-service")
    )
    groups = [stack.ns.topic_prefix + g for g in ("reward-service", "attribution-service")]
    receiver = Receiver()
    app = Starlette(routes=[Route("/hooks", receiver.handle, methods=["POST"])])
    async with (
        http_receiver(app) as receiver_url,
        httpx.AsyncClient(headers=stack.headers, timeout=10) as http,
    ):
        r = await http.post(
            f"{link}/v1/programs",
            json={"name": "Dropbox", "landing_url": "https://dropbox.example.com"},
        )
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        r = await http.put(
            f"{link}/v1/programs/{pid}/audience",
            json={
                "segments": [
                    {"name": "basic", "condition": {"attribute": "plan", "equals": "basic"}},
                    {"name": "plus", "condition": {"attribute": "plan", "equals": "plus"}},
                ],
                "eligibility": {
                    "enroll": {"countries_deny": ["RU"]},
                    "friends": {"countries_allow": ["DE", "AT", "US"]},
                },
            },
        )
        assert r.status_code == 200, r.text

        # the program and its segments reach reward-service through link.events: the rule
        # naming them is accepted once they have (409: the program not yet; 422: its segments)
        async def rule_put() -> bool:
            r = await http.put(f"{reward}/v1/programs/{pid}/reward-rule", json=DROPBOX)
            assert r.status_code in (200, 409, 422), r.text
            return r.status_code == 200

        await eventually(rule_put, timeout=60)
        r = await http.put(
            f"{attribution}/v1/programs/{pid}/attribution-settings",
            json={
                "fraud": {
                    "too_fast": {"enabled": False},
                    "velocity": {"per_advocate_hour": 1000, "per_advocate_day": 1000},
                }
            },
        )
        assert r.status_code == 200, r.text
        r = await http.post(
            f"{notification}/v1/webhook-endpoints",
            json={"url": f"{receiver_url}/hooks", "event_types": ["referral.thank_you.v1"]},
        )
        assert r.status_code == 201, r.text

        advocates: dict[str, dict[str, Any]] = {}
        for name, plan in (("basic", "basic"), ("plus", "plus"), ("up", "basic")):
            r = await http.post(
                f"{link}/v1/programs/{pid}/advocates",
                json={
                    "customer_id": f"cus_{name}",
                    "email": f"{name}@example.com",
                    "attributes": {"plan": plan, "country": "DE"},
                },
            )
            assert r.status_code == 201, r.text
            advocates[name] = r.json()
        # eligibility: an enrollment from a denied country, named by its rule
        r = await http.post(
            f"{link}/v1/programs/{pid}/advocates",
            json={"customer_id": "cus_ivan", "attributes": {"plan": "basic", "country": "RU"}},
        )
        assert r.status_code == 422
        assert r.json()["field"] == "/attributes/country"
        assert "eligibility.enroll.countries_deny" in r.json()["detail"]
        r = await http.get(f"{link}/v1/programs/{pid}/segments/basic/preview")
        assert (r.json()["matching"], r.json()["total"]) == (2, 3)

        async def signup(advocate: str, friend: str, country: str = "DE") -> dict[str, Any]:
            r = await http.post(
                f"{attribution}/v1/conversions",
                json={
                    "type": "signup",
                    "customer_id": friend,
                    "code": advocates[advocate]["code"],
                    "country": country,
                },
            )
            assert r.status_code in (201, 202), r.text
            body: dict[str, Any] = r.json()
            return body

        async def decided(conversion_id: str) -> dict[str, Any] | None:
            got: dict[str, Any] = (
                await http.get(f"{attribution}/v1/conversions/{conversion_id}")
            ).json()
            return None if got["status"] == "pending" else got

        # the codes and the attributes have arrived where they are read
        first = await signup("basic", "cus_f_basic_0")
        assert (await eventually(lambda: decided(first["id"])))["status"] == "attributed"
        await wait_caught_up(stack.ns.kafka_bootstrap_servers, groups)

        # eligibility of friends: a French friend does not count, the check is named
        fr = await signup("basic", "cus_f_fr", "FR")
        fr = await eventually(lambda: decided(fr["id"]))
        assert fr["status"] == "rejected"
        assert {c["check"]: c["outcome"] for c in fr["explanation"]["checks"]}[
            "eligibility"
        ] == "fail"

        sent = [first]
        for i in range(1, 40):
            sent.append(await signup("basic", f"cus_f_basic_{i}"))
        for i in range(40):
            sent.append(await signup("plus", f"cus_f_plus_{i}"))
        for i in range(20):
            sent.append(await signup("up", f"cus_f_up_{i}"))
        for c in sent:
            assert (await eventually(lambda c=c: decided(c["id"])))["status"] == "attributed"
        await wait_caught_up(stack.ns.kafka_bootstrap_servers, groups)

        # the upgrade, as the merchant's event; the next 20 referrals are Plus's
        r = await http.post(
            f"{link}/v1/advocates/{advocates['up']['id']}/attribute-changes",
            json={"changes": {"plan": "plus"}},
        )
        assert r.status_code == 200, r.text
        await asyncio.sleep(0.5)
        await wait_caught_up(stack.ns.kafka_bootstrap_servers, groups)
        later = [await signup("up", f"cus_f_up_{i}") for i in range(20, 40)]
        for c in later:
            assert (await eventually(lambda c=c: decided(c["id"])))["status"] == "attributed"

        async def mb(advocate: str) -> int:
            r = await http.get(f"{reward}/v1/accounts/{advocates[advocate]['id']}/balance")
            # 404 until reward-service has heard of the advocate (link.events): polled again
            assert r.status_code == 200, r.text
            return sum(b["available_minor"] for b in r.json()["balances"] if b["unit"] == "MB")

        async def settled() -> bool:
            return (await mb("basic"), await mb("plus"), await mb("up")) == (
                CAP_BASIC,
                CAP_PLUS,
                20 * MB_BASIC + 20 * MB_PLUS,
            )

        await eventually(settled, timeout=60)
        r = await http.get(f"{reward}/v1/admin/ledger/verify")
        assert r.status_code == 200 and r.json()["ok"], r.text

        # thank-yous: one per referral to the merchant's webhook, and the advocate's mail
        basic_id = advocates["basic"]["id"]

        async def thanked() -> bool:
            mine = [
                m
                for m in receiver.received
                if m["data"]["recipient_id"] == basic_id
                and m["data"]["recipient_kind"] == "advocate"
            ]
            return len(mine) == 40

        await eventually(thanked, timeout=60)
        assert all(m["type"] == "referral.thank_you.v1" for m in receiver.received)
        r = await http.get(
            f"{notification}/v1/emails",
            params={"recipient_kind": "advocate", "recipient_id": basic_id, "limit": 200},
        )
        templates = [e["template"] for e in r.json()["items"]]
        assert templates.count("advocate_friend_converted") == 40

"""Export and erasure of one person across the four services as real processes (issue 19).

Pat is an advocate in program A (a friend of theirs buys: clicks, purchases, rewards, a
redemption) and a friend in program B (they click Quinn's link and buy: a reward as the friend,
a redemption), with a webhook endpoint taking every event and mails queued. Then:

- the export names every row of theirs any service holds (read from the databases directly);
- erased with notification-service stopped, the request waits for it, and completes once it is
  started again, within 60 s of the request;
- no text, jsonb, varchar or array column of any schema holds their e-mail, customer id or name
  (the delivery log included); `reward-service verify` passes; the analytics totals are those
  of before;
- every consumer group replayed from the beginning of every topic, with every inbox forgotten
  (so nothing is stopped as a duplicate), brings none of it back, and the ledger still verifies.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from attribution_service.privacy.registry import PERSONAL_DATA as ATTRIBUTION
from devstack import services
from devstack.pytest_plugin import Namespace
from devstack.services import RunningService, StackConfig
from devstack.testing import eventually, http_receiver, new_api_key
from link_service.privacy.registry import PERSONAL_DATA as LINK
from notification_service.privacy.registry import PERSONAL_DATA as NOTIFICATION
from reward_service.privacy.registry import PERSONAL_DATA as REWARD
from servicekit.privacy import PersonalTable

# four processes started three times over, on a machine the CI shares: more than the default
pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]

SCHEMAS: dict[str, tuple[str, tuple[PersonalTable, ...]]] = {
    "link": ("link-service", LINK),
    "attribution": ("attribution-service", ATTRIBUTION),
    "reward": ("reward-service", REWARD),
    "notification": ("notification-service", NOTIFICATION),
}
TYPES = ("text", "jsonb", "json", "character varying", "ARRAY")
BROWSER = {"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"}


@dataclass
class Receiver:
    received: list[bytes] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        self.received.append(await request.body())
        return Response(status_code=204)


@dataclass
class Stack:
    cfg: StackConfig
    running: dict[str, RunningService]
    headers: dict[str, str]
    ns: Namespace

    def url(self, name: str) -> str:
        return self.running[name].url

    async def stop(self, *names: str) -> None:
        await asyncio.to_thread(services.stop, [self.running[n] for n in names])

    async def start(self, *names: str) -> None:
        defs = tuple(d for d in services.SERVICES if d.name in names)
        started = services.start(self.cfg, defs)
        await asyncio.to_thread(services.wait_ready, started, 180)
        self.running.update({s.definition.name: s for s in started})


@pytest.fixture
async def stack(namespace: Namespace, tmp_path: Path) -> AsyncIterator[Stack]:
    key, entry = new_api_key("acme")
    cfg = namespace.stack_config([entry], tmp_path / "logs")
    await asyncio.to_thread(services.migrate_here, cfg)
    running = services.start(cfg)
    s = Stack(cfg, {r.definition.name: r for r in running}, {"Authorization": f"Bearer {key}"},
              namespace)  # fmt: skip
    try:
        # a loaded machine can take a while to import the services
        await asyncio.to_thread(services.wait_ready, running, 180)
        yield s
    finally:
        await asyncio.to_thread(services.stop, list(s.running.values()))
        for log in sorted((tmp_path / "logs").glob("*.log")):
            text = log.read_text()
            if "Traceback" in text:
                print(f"--- {log.name}\n{text[-4000:]}")


async def _columns(conn: asyncpg.Connection) -> list[tuple[str, str, str]]:
    rows = await conn.fetch(
        """
        SELECT c.table_schema, c.table_name, c.column_name FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = ANY($1) AND c.data_type = ANY($2) AND t.table_type = 'BASE TABLE'
        """,
        list(SCHEMAS),
        list(TYPES),
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def _hits(conn: asyncpg.Connection, needles: list[str]) -> list[str]:
    """Every schema.table.column whose text holds one of `needles` (case-insensitive)."""
    patterns = [f"%{n}%" for n in needles]
    found = []
    for schema, table, column in await _columns(conn):
        n = await conn.fetchval(
            f'SELECT count(*) FROM "{schema}"."{table}" WHERE "{column}"::text ILIKE ANY($1)',  # noqa: S608
            patterns,
        )
        if n:
            found.append(f"{schema}.{table}.{column} ({n})")
    return found


async def _rows_naming(
    conn: asyncpg.Connection, needles: list[str]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Per exported table, its rows whose text holds one of `needles`."""
    patterns = [f"%{n}%" for n in needles]
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for schema, (_, registry) in SCHEMAS.items():
        for t in registry:
            if t.match is None or not t.export:
                continue
            rows = await conn.fetch(
                f'SELECT to_jsonb(t)::text AS r FROM "{schema}"."{t.table}" t'  # noqa: S608
                " WHERE t::text ILIKE ANY($1)",
                patterns,
            )
            if rows:
                out[(schema, t.table)] = [json.loads(r["r"]) for r in rows]
    return out


def _key(row: dict[str, Any]) -> str:
    return str(row["id"]) if "id" in row else json.dumps(row, sort_keys=True)


async def _groups_caught_up(bootstrap: str, prefix: str) -> bool:
    """Every consumer group of this namespace has committed the end of every partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        groups = [g[0] for g in await admin.list_consumer_groups() if g[0].startswith(prefix)]
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            if not offsets:
                return False
            ends = await consumer.end_offsets(list(offsets))
            if any(offsets[tp].offset < ends[tp] for tp in offsets):
                return False
        return bool(groups)
    finally:
        await consumer.stop()
        await admin.close()


async def _rewind_groups(bootstrap: str, prefix: str) -> list[str]:
    """Every consumer group of this namespace (all stopped) back to the start of its topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        groups = [g[0] for g in await admin.list_consumer_groups() if g[0].startswith(prefix)]
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
            )
            await consumer.start()
            try:
                consumer.assign(list(offsets))
                starts = await consumer.beginning_offsets(list(offsets))
                await consumer.commit({tp: starts[tp] for tp in offsets})
            finally:
                await consumer.stop()
        return groups
    finally:
        await admin.close()


async def test_a_person_is_exported_and_erased_everywhere(stack: Stack) -> None:
    n = secrets.token_hex(4)
    email, customer, name = f"pat.{n}@example.com", f"cus_pat_{n}", f"Patricia Zq{n}"
    needles = [email, customer, name]
    link, attribution, reward, notification = (
        stack.url(s)
        for s in ("link-service", "attribution-service", "reward-service", "notification-service")
    )
    receiver = Receiver()
    app = Starlette(routes=[Route("/hooks", receiver.handle, methods=["POST"])])
    async with (
        http_receiver(app) as receiver_url,
        httpx.AsyncClient(headers=stack.headers, timeout=10) as http,
    ):

        async def ok(r: Any, status: int = 200) -> Any:
            response = await r
            assert response.status_code == status, response.text
            return response.json()

        hooks = {"url": f"{receiver_url}/hooks", "event_types": ["*"]}
        await ok(http.post(f"{notification}/v1/webhook-endpoints", json=hooks), 201)

        async def program(label: str) -> str:
            p = await ok(http.post(f"{link}/v1/programs", json={
                "name": label, "landing_url": "https://shop.example.com"}), 201)  # fmt: skip
            side = {
                "trigger": "first_purchase",
                "amount": {"amount_minor": 2000, "currency": "USD"},
            }
            await ok(http.put(f"{reward}/v1/programs/{p['id']}/reward-rule",
                              json={"advocate": side, "friend": side}))  # fmt: skip
            await ok(http.put(f"{attribution}/v1/programs/{p['id']}/attribution-settings",
                              json={"fraud": {"too_fast": {"enabled": False}}}))  # fmt: skip
            return str(p["id"])

        prog_a, prog_b = await program("A"), await program("B")
        pat = await ok(http.post(f"{link}/v1/programs/{prog_a}/advocates", json={
            "customer_id": customer, "email": email, "name": name,
            "marketing_consent": True}), 201)  # fmt: skip
        quinn = await ok(http.post(f"{link}/v1/programs/{prog_b}/advocates", json={
            "customer_id": f"cus_quinn_{n}", "email": f"quinn.{n}@example.com"}), 201)  # fmt: skip

        async def click(code: str) -> str:
            r = await http.get(f"{link}/r/{code}", headers=BROWSER, follow_redirects=False)
            assert r.status_code == 302, r.text
            return parse_qs(urlsplit(r.headers["location"]).query)["click_id"][0]

        async def purchase(body: dict[str, Any]) -> dict[str, Any]:
            async def decided() -> Any:
                r = await http.post(f"{attribution}/v1/conversions", json=body,
                                    headers={"Idempotency-Key": body["order_id"]})  # fmt: skip
                assert r.status_code in (200, 201, 202), r.text
                return r.json() if r.json()["status"] != "pending" else None

            got: dict[str, Any] = await eventually(decided, 30)
            assert got["status"] == "attributed", got
            return got

        # Pat's friend Fred buys through Pat's link (program A)
        fred_click = await click(pat["code"])
        await purchase({"type": "purchase", "customer_id": f"cus_fred_{n}",
                        "email": f"fred.{n}@example.com", "order_id": f"ord_f_{n}",
                        "amount": "40.00", "currency": "USD", "click_id": fred_click})  # fmt: skip
        # Pat buys through Quinn's link (program B): Pat is the friend there
        pat_click = await click(quinn["code"])
        bought = await purchase({"type": "purchase", "customer_id": customer, "email": email,
                                 "order_id": f"ord_p_{n}", "amount": "25.00", "currency": "USD",
                                 "click_id": pat_click})  # fmt: skip

        async def available(holder: str) -> int:
            body = await ok(http.get(f"{reward}/v1/accounts/{holder}/balance"))
            return sum(b["available_minor"] for b in body["balances"])

        await eventually(lambda: _at_least(available(pat["id"]), 2000), 30)
        await eventually(lambda: _at_least(available(customer), 2000), 30)
        for holder, ref in ((pat["id"], f"gift for {name}"), (customer, f"sent to {email}")):
            await ok(http.post(f"{reward}/v1/accounts/{holder}/redemptions",
                               json={"amount_minor": 500, "unit": "USD", "reference": ref},
                               headers={"Idempotency-Key": f"red_{holder}"}), 201)  # fmt: skip

        today = datetime.now(UTC).date()
        span = {"from": str(today - timedelta(days=1)), "to": str(today), "interval": "month"}

        async def totals() -> list[Any]:
            return [
                (await ok(http.get(f"{attribution}/v1/programs/{p}/analytics", params=span)))[
                    "totals"
                ]
                for p in (prog_a, prog_b)
            ]

        async def settled() -> Any:
            t = await totals()
            return t if all(x["first_purchases"] == 1 for x in t) else None

        await eventually(settled, 30)
        # everything the test caused has reached every service (webhooks delivered, mails
        # queued, folds done) before the export reads
        await eventually(lambda: _groups_caught_up(stack.ns.kafka_bootstrap_servers,
                                                   stack.ns.topic_prefix), 60)  # fmt: skip
        await eventually(lambda: len(receiver.received) >= 8, 30)
        before = await totals()

        conn = await asyncpg.connect(stack.ns.database_url)
        try:
            held = await _rows_naming(conn, needles)
            assert {
                ("link", "advocates"),
                ("attribution", "conversions"),
                ("reward", "rewards"),
                ("reward", "redemptions"),
                ("notification", "webhook_messages"),
            } <= set(held)

            # --- the export: every row naming Pat, from every service
            subject = {"customer_id": customer, "email": email}
            req = await ok(http.post(f"{link}/v1/privacy/exports", json=subject), 202)

            async def done(request_id: str) -> Any:
                got = await ok(http.get(f"{link}/v1/privacy/requests/{request_id}"))
                return got if got["status"] == "completed" else None

            export = await eventually(lambda: done(req["id"]), 30)
            document = export["document"]
            for (schema, table), rows in held.items():
                service = SCHEMAS[schema][0]
                exported = {_key(r) for r in document.get(service, {}).get(table, [])}
                missing = [r for r in rows if _key(r) not in exported]
                assert not missing, f"{schema}.{table}: not exported: {missing}"
            assert bought["id"] in {c["id"] for c in document["attribution-service"]["conversions"]}

            # --- the erasure, notification-service down meanwhile
            await stack.stop("notification-service")
            started = time.monotonic()
            req = await ok(http.post(f"{link}/v1/privacy/erasures", json=subject), 202)

            async def three_of_four() -> Any:
                got = await ok(http.get(f"{link}/v1/privacy/requests/{req['id']}"))
                states = {s: p["status"] for s, p in got["services"].items()}
                return (
                    got
                    if states["notification-service"] == "pending"
                    and all(v == "done" for s, v in states.items() if s != "notification-service")
                    else None
                )

            waiting = await eventually(three_of_four, 30)
            assert waiting["status"] == "pending"
            await stack.start("notification-service")
            erased = await eventually(lambda: done(req["id"]), 60)
            took = time.monotonic() - started
            print(f"erasure completed {took:.1f}s after the request (one service restarted)")
            assert took < 60
            assert erased["services"]["reward-service"]["rows"]["accounts"] >= 1

            assert await _hits(conn, needles) == []
            assert await totals() == before
            await _verify(stack)
            # the audit names who asked and which services confirmed, never Pat
            audit = await conn.fetch("SELECT action, details::text AS d FROM link.audit_log"
                                     " WHERE target_id = $1", req["id"])  # fmt: skip
            assert {a["action"] for a in audit} == {
                "privacy.erasure.requested", "privacy.erasure.completed"}  # fmt: skip

            # --- a replay of every topic from the beginning: inbox rows gone (as after
            # pruning), every group rewound, the services started again
            names = [d.name for d in services.SERVICES]
            await stack.stop(*names)
            for schema in SCHEMAS:
                await conn.execute(f'DELETE FROM "{schema}".inbox')  # noqa: S608
            rewound = await _rewind_groups(stack.ns.kafka_bootstrap_servers, stack.ns.topic_prefix)
            assert rewound
            await stack.start(*names)
            await eventually(lambda: _groups_caught_up(stack.ns.kafka_bootstrap_servers,
                                                       stack.ns.topic_prefix), 90)  # fmt: skip
            await asyncio.sleep(2)  # the last folds' commits, the outbox relays' rounds
            assert await _hits(conn, needles) == []
            # (the analytics counters are not compared here: with the inbox forgotten every
            # other event folds a second time, which is what the inbox exists to prevent)
            await _verify(stack)
        finally:
            await conn.close()


async def _verify(stack: Stack) -> None:
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reward_service.main", "verify"],
        env=stack.cfg.env(services.SERVICES[2]),
        capture_output=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()


async def _at_least(value: Any, minimum: int) -> bool:
    return int(await value) >= minimum

"""The group commit of POST /v1/conversions decides a batch exactly as the same requests one
after another would have been decided: the batch runs in a transaction that is rolled back, the
same requests run one by one in another that is rolled back too, and the answers, the stored
decisions and the outbox rows must match. The batch mixes everything that links requests to
each other: a repeated Idempotency-Key (same and other body), a repeated (type, order id), one
customer twice, one advocate's velocity, signups from one IP hash, the advocate's own signup as
a sighting for self-referral, refused evidence, evidence not seen yet, an unknown custom type,
rings among an advocate's referrals (one device, one email stem), and an advocate blocked
automatically by their denied referrals."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from attribution_service.config import Settings
from attribution_service.conversions import api, handlers
from attribution_service.conversions import batch as conversion_batch
from attribution_service.conversions.batch import Outcome
from attribution_service.conversions.handlers import NewConversion
from attribution_service.conversions.schemas import ConversionIn
from attribution_service.main import create_app
from devstack.pytest_plugin import Namespace
from devstack.testing import FRONT_AND_FASTAPI, eventually, migrate, new_api_key, serve_in_process
from referral_events.contracts import link as ev
from servicekit.problems import DomainError
from servicekit.runtime import Runtime

from .conftest import Env, click, link_facts

# Every test twice: the hot path answered by the front door, and by FastAPI alone.
pytestmark = [pytest.mark.integration, FRONT_AND_FASTAPI]

NOW = datetime.now(UTC)
GRACE = timedelta(minutes=10)
KNOWN_CLICK = "clk_" + "k" * 24
UNSEEN_CLICK = "clk_" + "u" * 24

REQUESTS: list[tuple[dict[str, Any], str | None]] = [
    ({"type": "signup", "customer_id": "cus_a", "code": "ANN123"}, "key-a"),
    ({"type": "signup", "customer_id": "cus_a", "code": "ANN123"}, "key-a"),  # same key, body
    ({"type": "signup", "customer_id": "cus_x", "code": "ANN123"}, "key-a"),  # other body: 409
    (
        {
            "type": "purchase",
            "customer_id": "cus_b",
            "code": "ANN123",
            "order_id": "ord_1",
            "amount": "10.00",
            "currency": "USD",
        },
        None,
    ),
    (
        {
            "type": "purchase",
            "customer_id": "cus_b",
            "order_id": "ord_1",
            "amount": "10.00",
            "currency": "USD",
        },
        None,
    ),  # the same (type, order id)
    # the same customer again: attributed through the referral the first one created
    (
        {
            "type": "purchase",
            "customer_id": "cus_a",
            "order_id": "ord_2",
            "amount": "5.00",
            "currency": "USD",
        },
        None,
    ),
    # signups from one IP address (limit 2 a day)
    ({"type": "signup", "customer_id": "cus_ip1", "code": "ANN123", "ip": "10.0.0.1"}, None),
    ({"type": "signup", "customer_id": "cus_ip2", "code": "ANN123", "ip": "10.0.0.1"}, None),
    ({"type": "signup", "customer_id": "cus_ip3", "code": "ANN123", "ip": "10.0.0.1"}, None),
    # the advocate signs up on a device; a friend on that device is the same person
    (
        {"type": "signup", "customer_id": "cus_adv", "code": "BOB123", "device_id": "dev_1"},
        None,
    ),
    ({"type": "signup", "customer_id": "cus_d", "code": "ANN123", "device_id": "dev_1"}, None),
    # by click; then the same customer's purchase without evidence
    ({"type": "signup", "customer_id": "cus_c", "click_id": KNOWN_CLICK}, None),
    (
        {
            "type": "purchase",
            "customer_id": "cus_c",
            "order_id": "ord_3",
            "amount": "7.00",
            "currency": "USD",
        },
        None,
    ),
    ({"type": "signup", "customer_id": "cus_f", "code": "GLX123"}, None),  # another tenant's
    ({"type": "signup", "customer_id": "cus_g", "click_id": UNSEEN_CLICK}, None),  # waits
    ({"type": "demo_booked", "customer_id": "cus_h", "code": "ANN123"}, None),  # unknown type
    ({"type": "signup", "customer_id": "cus_i"}, None),  # organic
    ({"type": "signup", "customer_id": "cus_j", "code": "ANN123"}, None),  # velocity by now
    # the same (type, order id) with another amount, another currency: conflicts
    (
        {
            "type": "purchase",
            "customer_id": "cus_b",
            "order_id": "ord_1",
            "amount": "11.00",
            "currency": "USD",
        },
        None,
    ),
    (
        {
            "type": "purchase",
            "customer_id": "cus_b",
            "order_id": "ord_1",
            "amount": "10.00",
            "currency": "EUR",
        },
        "another-key",
    ),
    # the program's friends come from DE or AT: a French friend is not eligible (whatever
    # velocity says), a German one is, one without a country passes unchecked
    ({"type": "signup", "customer_id": "cus_k", "code": "ANN123", "country": "FR"}, None),
    ({"type": "signup", "customer_id": "cus_l", "code": "BOB123", "country": "de"}, None),
    ({"type": "signup", "customer_id": "cus_m", "code": "BOB123"}, None),
    # rings among another advocate's referrals: three friends on one device, three addresses
    # of one stem; the third of each completes its cluster (the ring rule's defaults)
    *(
        ({"type": "signup", "customer_id": f"cus_rd{i}", "code": "BOB123", **extra}, None)
        for i, extra in enumerate(
            [
                {"device_id": "dev_ring", "ip": "2001:db8:7::1"},
                {"device_id": "dev_ring", "ip": "2001:db8:8::1"},
                {"device_id": "dev_ring", "ip": "2001:db8:9::1"},
                {"email": "zed1@example.org"},
                {"email": "zed22@example.org"},
                {"email": "zed333@example.org"},
            ]
        )
    ),
    # the advocate's second denied referral (their own mailbox) blocks them (auto_block after
    # 2): their next conversion is denied
    (
        {
            "type": "signup",
            "customer_id": "cus_self",
            "code": "ANN123",
            "email": "Ann.Smith+x@gmail.com",
        },
        None,
    ),
    ({"type": "signup", "customer_id": "cus_after", "code": "ANN123"}, None),
]


def _prepared() -> list[NewConversion]:
    return [
        handlers.prepare_conversion(
            "acme", ConversionIn.model_validate(body), key, hash_key="k" * 16, now=NOW
        )
        for body, key in REQUESTS
    ]


async def _sequential(conn: asyncpg.Connection, batch: Sequence[NewConversion]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for new in batch:
        try:
            outcomes.append(await handlers.submit_prepared(conn, new, grace=GRACE))
        except DomainError as exc:
            outcomes.append(exc)
    return outcomes


async def _batched(conn: asyncpg.Connection, batch: Sequence[NewConversion]) -> list[Outcome]:
    return await conversion_batch.submit_many(conn, batch, grace=GRACE)


Run = Callable[[asyncpg.Connection, Sequence[NewConversion]], Awaitable[list[Outcome]]]


async def _observe(dsn: str, run: Run) -> tuple[list[Any], Counter[str]]:
    """The answers (conversion ids replaced by the request that first answered with them) and
    the outbox rows written, of one run in a transaction that is rolled back."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "attribution"})
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            before = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM outbox")
            outcomes = await run(conn, _prepared())
            first: dict[str, int] = {}
            answers: list[Any] = []
            for i, o in enumerate(outcomes):
                if isinstance(o, DomainError):
                    answers.append((type(o).__name__, o.field))
                    continue
                row, created = o
                stored = await conn.fetchrow("SELECT * FROM conversions WHERE id = $1", row["id"])
                assert stored is not None
                # the answer is the conversion as stored
                assert api._out(row) == api._out(stored), (row, stored)
                answers.append(
                    (
                        first.setdefault(row["id"], i),
                        created,
                        row["status"],
                        stored["status"],
                        stored["decision"],
                        stored["evidence"],
                        stored["advocate_id"],
                        stored["sequence"],
                        stored["is_first_purchase"],
                        [(c["check"], c["outcome"]) for c in stored["explanation"]["checks"]]
                        if stored["explanation"]
                        else None,
                    )
                )
            events: Counter[str] = Counter()
            for r in await conn.fetch(
                "SELECT key, payload FROM outbox WHERE seq > $1 ORDER BY seq", before
            ):
                data = json.loads(bytes(r["payload"]))["data"]
                for volatile in ("referral_id", "review_id", "attributed_at", "blocked_at"):
                    data.pop(volatile, None)
                data["conversion_id"] = first.get(data.get("conversion_id", ""), -1)
                events[json.dumps([r["key"], data], sort_keys=True)] += 1
            return answers, events
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def test_a_batch_is_decided_as_its_requests_one_after_another(env: Env) -> None:
    r = await env.client.put(
        "/v1/programs/prg_1/attribution-settings",
        json={
            "fraud": {
                "velocity": {"per_advocate_hour": 8, "signups_per_ip_day": 2},
                "too_fast": {"enabled": False},
                "auto_block": {"after_denied": 2},
            }
        },
    )
    assert r.status_code == 200, r.text
    await link_facts(env.publish)
    await link_facts(env.publish, advocate="adv_2", code="BOB123", customer="cus_bob")
    await env.publish(
        "link.events",
        ev.ProgramAudienceChanged(
            program_id="prg_1", eligibility={"friends": {"countries_allow": ["AT", "DE"]}}
        ),
    )
    await env.publish(
        "link.events",
        ev.CodeCreated(code="GLX123", advocate_id="adv_g", program_id="prg_g"),
        tenant="globex",
    )
    await env.publish("link.clicks", click(KNOWN_CLICK, ago=timedelta(minutes=30)))
    dsn = env.ns.database_url

    async def copies_in() -> bool:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": "attribution"})
        try:
            return bool(
                await conn.fetchval(
                    "SELECT (SELECT count(*) FROM codes) = 3 AND (SELECT count(*) FROM clicks) = 1"
                    " AND (SELECT count(*) FROM advocates) = 2"
                    " AND (SELECT count(*) FROM programs WHERE friend_countries IS NOT NULL) = 1"
                )
            )
        finally:
            await conn.close()

    await eventually(copies_in, timeout=60)

    one_by_one, events_one_by_one = await _observe(dsn, _sequential)
    together, events_together = await _observe(dsn, _batched)

    # what the scenario is about actually happened
    statuses = [a if isinstance(a[0], str) else a[3] for a in one_by_one]
    assert one_by_one[1][0] == 0 and one_by_one[1][1] is False  # the repeat: the first, 200
    assert one_by_one[2] == ("Conflict", "/Idempotency-Key")
    assert one_by_one[4][0] == 3  # the same order
    assert one_by_one[5][5] == "existing_referral" and one_by_one[5][2] == "attributed"
    assert statuses[6:9] == ["attributed", "attributed", "review"]  # the third from the IP
    # the advocate converts through another advocate's code; a friend on their device is them
    assert statuses[9] == "attributed" and statuses[10] == "rejected"
    assert ("self_referral", "fail") in one_by_one[10][9]
    assert one_by_one[11][5] == "click" and one_by_one[12][5] == "existing_referral"
    assert one_by_one[13] == ("InvalidInput", "/code")
    assert statuses[14] == "pending"
    assert one_by_one[15] == ("InvalidInput", "/type")
    assert statuses[16] == "organic"
    assert statuses[17] == "review"  # the advocate's ninth conversion this hour
    assert one_by_one[18:20] == [("Conflict", "/amount"), ("Conflict", "/currency")]
    assert statuses[20] == "rejected" and ("eligibility", "fail") in one_by_one[20][9]
    assert statuses[21] == "attributed" and ("eligibility", "pass") in one_by_one[21][9]
    assert statuses[22] == "attributed" and ("eligibility", "unknown") in one_by_one[22][9]
    assert statuses[23:29] == ["attributed", "attributed", "review"] * 2
    assert statuses[29:] == ["rejected", "rejected"]
    assert ("blocked_advocate", "fail") in one_by_one[30][9]
    assert sum('"after_denied"' in e for e in events_one_by_one) == 1  # auto-blocked
    assert ("ring", "fail") in one_by_one[25][9] and ("ring", "fail") in one_by_one[28][9]
    assert ("ring", "pass") in one_by_one[24][9]

    assert together == one_by_one
    assert events_together == events_one_by_one


async def test_a_batch_failing_in_the_database_is_retried_one_request_at_a_time(
    namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error inside a batch rolls all of it back; each of its requests is then
    answered from a transaction of its own: a bad one fails alone, a repeated key still
    answers with the first conversion, and nothing is recorded twice."""
    dsn = namespace.database_url
    await migrate(dsn, "attribution", "attribution_service")
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "attribution"})
    try:
        await conn.execute(
            "INSERT INTO programs (id, tenant_id, status, name)"
            " VALUES ('prg_1', 'acme', 'active', 'p');"
            "INSERT INTO advocates (id, tenant_id, program_id, customer_id)"
            " VALUES ('adv_1', 'acme', 'prg_1', 'cus_adv');"
            "INSERT INTO codes (code_key, code, tenant_id, program_id, advocate_id)"
            " VALUES ('ANN123', 'ANN123', 'acme', 'prg_1', 'adv_1'),"
            " ('GLX123', 'GLX123', 'globex', 'prg_g', 'adv_g')"
        )
    finally:
        await conn.close()
    key, entry = new_api_key("acme")
    settings = Settings(
        **namespace.settings_env(),
        api_keys=[entry],
        conversion_writers=1,
        outbox_poll_interval_seconds=0.2,
    )
    real = conversion_batch.submit_many
    failed: list[int] = []

    async def fails_twice(conn: asyncpg.Connection, batch: Any, **kw: Any) -> Any:
        if len(failed) < 2:
            failed.append(len(batch))
            await asyncio.sleep(0.5)  # the next requests queue up behind this batch
            await conn.execute("SELECT 1 / 0")
        return await real(conn, batch, **kw)

    monkeypatch.setattr(conversion_batch, "submit_many", fails_twice)
    retries_before = conversion_batch.BATCH_RETRIES._value.get()
    bodies = [
        ({"type": "signup", "customer_id": "cus_1", "code": "ANN123"}, "k1"),
        ({"type": "signup", "customer_id": "cus_2", "code": "ANN123"}, "k2"),
        ({"type": "signup", "customer_id": "cus_2", "code": "ANN123"}, "k2"),
        ({"type": "signup", "customer_id": "cus_3", "code": "GLX123"}, "k3"),
        ({"type": "signup", "customer_id": "cus_4"}, "k4"),
    ]
    async with serve_in_process(create_app(settings), key) as client:
        first = asyncio.create_task(
            client.post("/v1/conversions", json=bodies[0][0], headers={"Idempotency-Key": "k1"})
        )
        await asyncio.sleep(0.1)
        rest = [
            client.post("/v1/conversions", json=b, headers={"Idempotency-Key": k})
            for b, k in bodies[1:]
        ]
        answers = [await first, *await asyncio.gather(*rest)]
    assert [r.status_code for r in answers] in (
        [201, 201, 200, 422, 201],
        [201, 200, 201, 422, 201],  # the two k2 requests may arrive in either order
    ), [r.text for r in answers]
    assert failed[0] == 1 and failed[1] == 4, failed
    assert conversion_batch.BATCH_RETRIES._value.get() - retries_before == 2
    assert answers[1].json()["id"] == answers[2].json()["id"]
    assert answers[3].json()["field"] == "/code"
    assert answers[0].json()["status"] == "attributed"
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "attribution"})
    try:
        assert await conn.fetchval("SELECT count(*) FROM conversions") == 3
        assert await conn.fetchval("SELECT count(DISTINCT event_id) FROM outbox") == 4
    finally:
        await conn.close()


async def test_requests_queued_while_the_writers_connections_cannot_open_go_one_by_one(
    namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer accepts as soon as the service serves and opens its own connections after
    that. Should they not open, what queued meanwhile is answered one request at a time on the
    service's pool, and so is everything after, until the writer is restarted."""
    dsn = namespace.database_url
    await migrate(dsn, "attribution", "attribution_service")
    key, entry = new_api_key("acme")
    settings = Settings(**namespace.settings_env(), api_keys=[entry], conversion_writers=1)
    opened = asyncio.Event()
    attempts: list[str | None] = []

    async def cannot_open(self: Runtime, **kw: Any) -> asyncpg.Pool:
        if kw.get("role") is None:  # the service's own pool opens as usual
            return await real_open(self, **kw)
        attempts.append(kw["role"])
        await opened.wait()  # requests queue up behind the opening
        raise OSError("connection refused")

    real_open = Runtime.open_pool
    monkeypatch.setattr(Runtime, "open_pool", cannot_open)
    async with serve_in_process(create_app(settings), key) as client:
        queued = [
            asyncio.create_task(
                client.post("/v1/conversions", json={"type": "signup", "customer_id": f"c{i}"})
            )
            for i in range(3)
        ]
        await eventually(lambda: attempts)
        await asyncio.sleep(0.1)
        assert not any(t.done() for t in queued)  # waiting in the writer's queue
        opened.set()
        answers = await asyncio.wait_for(asyncio.gather(*queued), 10)
        # the writer is not accepting until it is restarted: one by one at once
        later = await client.post(
            "/v1/conversions", json={"type": "signup", "customer_id": "c_later"}
        )
    assert [r.status_code for r in answers] == [201, 201, 201], [r.text for r in answers]
    assert later.status_code == 201, later.text
    assert attempts[0] == "writer"
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "attribution"})
    try:
        assert await conn.fetchval("SELECT count(*) FROM conversions") == 4
    finally:
        await conn.close()

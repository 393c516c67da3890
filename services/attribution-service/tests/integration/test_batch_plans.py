"""The group commit plans its statements once per connection (the session settings of its
connections, repository.BATCH_PLAN_SETTINGS), maybe while the tables are still empty and without
statistics. Such a plan must stay an index lookup per conversion when the tables fill up: here
it is made on empty tables, then the tenant gets 5,000 conversions and referrals of other
customers and advocates, and deciding ten new conversions may read only the rows that concern
them (none), not the tenant's history."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from attribution_service.conversions import repository
from attribution_service.conversions.facts import Conversion, RingAsk, RingRead, ScreeningAsk
from devstack.pytest_plugin import Namespace
from devstack.testing import migrate
from servicekit import migrations

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
HISTORY = 5000


def _conversions() -> list[Conversion]:
    return [
        Conversion(
            id=f"cnv_new_{i}",
            tenant_id="acme",
            type="purchase",
            custom_type=None,
            customer_id=f"cus_new_{i}",
            email=None,
            email_norm=None,
            order_id=f"ord_new_{i}",
            amount_minor=1000,
            currency="USD",
            occurred_at=NOW,
            click_id=None,
            code_key="ANN123",
            idempotency_key=f"key_new_{i}",
            request_hash="h",
            subscription_id=None,
            ip_hash=f"ip_new_{i}",
            device_hash=f"dev_new_{i}",
            existing_customer=False,
            locale=None,
            source="api",
            address_hash=f"addr_new_{i}",
            payment_hash=f"pay_new_{i}",
            ip_prefix_hash=f"net_new_{i}",
            email_stem_hash=f"stem_new_{i}",
            received_at=NOW,
        )
        for i in range(10)
    ]


def _asks(convs: list[Conversion]) -> list[ScreeningAsk]:
    return [
        ScreeningAsk(
            program_id="prg_1",
            advocate_id="adv_1",
            tenant_id=c.tenant_id,
            customer_id=c.customer_id,
            id=c.id,
            occurred_at=c.occurred_at,
            anchor=c.occurred_at,
            network_window=timedelta(hours=24),
            ip_hash=c.ip_hash,
            device_hash=c.device_hash,
        )
        for c in convs
    ]


async def _rows_read(conn: asyncpg.Connection) -> int:
    """Rows of conversions and referrals this transaction has read, by any scan."""
    read: int = await conn.fetchval(
        "SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)"
        " FROM pg_stat_xact_user_tables WHERE relname IN ('conversions', 'referrals')"
    )
    return read


async def _decide_reads(conn: asyncpg.Connection) -> int:
    convs = _conversions()
    async with conn.transaction():
        contexts = await repository.conversion_contexts(conn, convs)
        await repository.screening_contexts(conn, _asks(convs))
        await repository.ring_reads(conn, [RingAsk.of(c, timedelta(hours=24)) for c in convs])
        assert [r["key_conversion_id"] for r in contexts] == [None] * len(convs)
        # the ring rule's read taken ahead answers the default window: no statement more
        for rec, conv in zip(contexts, convs, strict=True):
            assert RingRead.of(rec).answers(RingAsk.of(conv, timedelta(hours=24)))
        return await _rows_read(conn)


async def test_plans_made_on_empty_tables_stay_lookups_when_they_fill(
    namespace: Namespace,
) -> None:
    await migrate(namespace.database_url, "attribution", "attribution_service")
    # a connection of the group commit's pool (ConversionWriter), as the writer opens it
    conn = await asyncpg.connect(
        namespace.database_url,
        server_settings={"search_path": "attribution", **repository.BATCH_PLAN_SETTINGS},
    )
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        await conn.execute(
            """
            INSERT INTO programs (id, tenant_id, status, name)
                VALUES ('prg_1', 'acme', 'active', 'p');
            INSERT INTO advocates (id, tenant_id, program_id, customer_id)
                VALUES ('adv_1', 'acme', 'prg_1', 'cus_adv');
            INSERT INTO codes (code_key, code, tenant_id, program_id, advocate_id)
                VALUES ('ANN123', 'ANN123', 'acme', 'prg_1', 'adv_1');
            """
        )
        # the plans are made now: no conversion, no referral, no statistics
        assert await _decide_reads(conn) == 0

        await conn.execute(
            """
            INSERT INTO referrals (id, tenant_id, program_id, advocate_id, friend_customer_id,
                                   evidence)
            SELECT 'ref_' || g, 'acme', 'prg_1', 'adv_old_' || g % 50, 'cus_old_' || g, 'code'
            FROM generate_series(1, $1) g;
            """,
            HISTORY,
        )
        await conn.execute(
            """
            INSERT INTO conversions (id, tenant_id, type, customer_id, occurred_at, request_hash,
                                     status, decision, program_id, advocate_id, referral_id,
                                     order_id, idempotency_key, ip_hash, device_hash,
                                     subscription_id, amount_minor, currency, sequence,
                                     received_at, address_hash, payment_hash,
                                     ip_prefix_hash, email_stem_hash)
            SELECT 'cnv_old_' || g, 'acme', 'purchase', 'cus_old_' || g,
                   now() - interval '3 days', 'h', 'attributed', 'allow', 'prg_1',
                   'adv_old_' || g % 50, 'ref_' || g, 'ord_old_' || g, 'key_old_' || g,
                   'ip_old_' || g, 'dev_old_' || g, 'sub_old_' || g, 1000, 'USD', 1,
                   now() - interval '1 hour', 'addr_old_' || g, 'pay_old_' || g,
                   'net_old_' || g, 'stem_old_' || g
            FROM generate_series(1, $1) g;
            """,
            HISTORY,
        )
        # The same statements on the same connection: the plans made on empty tables. A plan
        # that reached these rows through an index led by tenant_id would read the tenant's
        # 5,000 conversions per conversion decided.
        assert await _decide_reads(conn) == 0
    finally:
        await conn.close()


async def test_index_migration_goes_down_and_up(namespace: Namespace) -> None:
    await migrate(namespace.database_url, "attribution", "attribution_service")
    conn = await asyncpg.connect(namespace.database_url)

    async def leading() -> dict[str, str]:
        rows = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'attribution'"
            " AND indexname IN ('conversions_idempotency', 'conversions_order',"
            " 'conversions_customer', 'referrals_friend', 'referrals_friend_program',"
            " 'referrals_tenant_id_program_id_friend_customer_id_key')"
        )
        return {r["indexname"]: r["indexdef"].split("(", 1)[1].split(",")[0] for r in rows}

    led_by_lookup = {
        "conversions_idempotency": "idempotency_key",
        "conversions_order": "order_id",
        "conversions_customer": "customer_id",
        "referrals_friend": "friend_customer_id",
        "referrals_friend_program": "friend_customer_id",
    }
    try:
        assert await leading() == led_by_lookup
        await asyncio.to_thread(
            migrations.downgrade,
            namespace.database_url,
            "attribution",
            "attribution_service",
            "0003",
        )
        assert await leading() == {
            "conversions_idempotency": "tenant_id",
            "conversions_order": "tenant_id",
            "conversions_customer": "tenant_id",
            "referrals_friend": "tenant_id",
            "referrals_tenant_id_program_id_friend_customer_id_key": "tenant_id",
        }
        await migrate(namespace.database_url, "attribution", "attribution_service")
        assert await leading() == led_by_lookup
    finally:
        await conn.close()

"""Workspace keys on attribution-service: read from the service's own copy of the key table,
refused once revoked, and rate limited by plan on the conversions hot path, front door or not
(the authenticator applies the limit, so both paths answer the same 429)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from attribution_service import main
from attribution_service.config import Settings
from devstack.pytest_plugin import Namespace
from devstack.testing import FRONT_AND_FASTAPI, eventually, migrate, serve_in_process
from servicekit.auth import generate_key, hash_key

pytestmark = [pytest.mark.integration, FRONT_AND_FASTAPI]

SIGNUP = {"type": "signup", "customer_id": "cus_1"}


@pytest.fixture
async def served(
    namespace: Namespace,
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncpg.Connection]]:
    await migrate(namespace.database_url, "attribution", "attribution_service")
    settings = Settings(
        **namespace.settings_env(),
        rate_limit_plans={"free": {"per_second": 0.1, "burst": 2}},
        api_key_cache_ttl_seconds=0.1,
    )
    conn = await asyncpg.connect(
        namespace.database_url, server_settings={"search_path": "attribution"}
    )
    try:
        async with serve_in_process(main.create_app(settings)) as client:
            yield client, conn
    finally:
        await conn.close()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _key(conn: asyncpg.Connection, key_id: str, plan: str = "free") -> str:
    secret = generate_key("rk_live_")
    await conn.execute(
        """
        INSERT INTO api_keys (key_hash, id, workspace_id, scopes, plan, version)
        VALUES ($1, $2, 'ws_1', ARRAY['conversions:write'], $3, 1)
        """,
        hash_key(secret),
        key_id,
        plan,
    )
    return secret


async def test_rate_limit_on_the_conversions_path_and_revocation(
    served: tuple[httpx.AsyncClient, asyncpg.Connection], front_door: list[str]
) -> None:
    client, conn = served
    a, b = await _key(conn, "key_a"), await _key(conn, "key_b")
    for n in range(2):
        # a new customer each time: a repeated signup of one customer is the same conversion
        signup = {**SIGNUP, "customer_id": f"cus_{n}"}
        r = await client.post("/v1/conversions", json=signup, headers=_bearer(a))
        assert r.status_code in (201, 202), r.text
    r = await client.post("/v1/conversions", json=SIGNUP, headers=_bearer(a))
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1 and r.headers["ratelimit-limit"] == "2"
    r = await client.post("/v1/conversions", json=SIGNUP, headers=_bearer(b))
    assert r.status_code in (200, 201, 202), r.text

    await conn.execute(
        "UPDATE api_keys SET revoked_at = $1, version = 2 WHERE id = 'key_b'", datetime.now(UTC)
    )
    await asyncio.sleep(0.2)  # the cache's TTL in this test
    r = await client.post("/v1/conversions", json=SIGNUP, headers=_bearer(b))
    assert r.status_code == 401, r.text
    assert r.json()["detail"] == "invalid API key"


async def test_key_uses_are_published_for_link_service_and_limits_show_on_success(
    namespace: Namespace, front_door: list[str]
) -> None:
    await migrate(namespace.database_url, "attribution", "attribution_service")
    settings = Settings(
        **namespace.settings_env(),
        rate_limit_plans={"free": {"per_second": 0.1, "burst": 5}},
        key_usage_flush_seconds=0.2,
    )
    conn = await asyncpg.connect(
        namespace.database_url, server_settings={"search_path": "attribution"}
    )
    try:
        async with serve_in_process(main.create_app(settings)) as client:
            key = await _key(conn, "key_used")
            before = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM outbox")
            r = await client.post(
                "/v1/conversions", json={**SIGNUP, "customer_id": "cus_u"}, headers=_bearer(key)
            )
            assert r.status_code in (201, 202), r.text
            # the bucket's state on a success too, front door or not
            assert r.headers["ratelimit-limit"] == "5" and r.headers["ratelimit-remaining"] == "4"

            async def published() -> list[dict[str, object]]:
                rows = await conn.fetch(
                    "SELECT payload FROM outbox WHERE seq > $1 ORDER BY seq", before
                )
                events = [json.loads(bytes(r["payload"])) for r in rows]
                return [e for e in events if e["type"] == "api_keys.used.v1"]

            [used] = await eventually(published, timeout=30)
            assert used["tenantid"] == "ws_1"
            assert used["data"]["service"] == "attribution-service"
            assert set(used["data"]["uses"]) == {"key_used"}
            # one event per period, not one per request
            for _ in range(6):
                await client.get("/v1/conversions/cnv_nope", headers=_bearer(key))
            await asyncio.sleep(0.6)
            assert 2 <= len(await published()) < 7
    finally:
        await conn.close()

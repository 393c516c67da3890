"""Integration secrets at rest (issue 19): what the database holds of a Shopify or Stripe secret
is sealed under SECRETS_KEY, never the secret; a secret stored in clear before sealing existed
still verifies deliveries until the resealer seals it; a key rotation re-seals every row under
the new key in bounded batches while reads accept the old one."""

from __future__ import annotations

import json

import asyncpg
import pytest
from cryptography.fernet import Fernet

from attribution_service.commerce.secrets import SEALED
from devstack.testing import dump_text_columns
from servicekit.secretbox import PREFIX, SecretBox, reseal_batch

from .conftest import Env
from .test_webhooks import SHOP, SHOP_SECRET, STRIPE_SECRET, stripe_event, stripe_headers

pytestmark = pytest.mark.integration
LEGACY_SECRET = "whsec_" + "legacy" * 6


async def _stripe_ping(env: Env, integration_id: str, secret: str) -> int:
    body = json.dumps(stripe_event("customer.created", {"id": "cus_x"})).encode()
    r = await env.client.post(
        f"/v1/webhooks/stripe/{integration_id}",
        content=body,
        headers=stripe_headers(body, secret=secret),
    )
    return r.status_code


async def test_a_dump_shows_no_secret_and_rotation_reseals(env: Env) -> None:
    for provider, account, secret in (
        ("shopify", SHOP, SHOP_SECRET),
        ("stripe", "default", STRIPE_SECRET),
    ):
        r = await env.client.post(
            "/v1/integrations", json={"provider": provider, "account": account, "secret": secret}
        )
        assert r.status_code == 201
        if provider == "stripe":
            stripe_id = r.json()["id"]
    dump = await dump_text_columns(env.ns.database_url, "attribution")
    assert SHOP_SECRET not in dump and STRIPE_SECRET not in dump
    assert dump.count(f"integrations.secret: {PREFIX}") == 2
    # The sealed secret still verifies deliveries, and a wrong one is still refused.
    assert await _stripe_ping(env, stripe_id, STRIPE_SECRET) == 200
    assert await _stripe_ping(env, stripe_id, "whsec_" + "x" * 32) == 401

    conn = await asyncpg.connect(env.ns.database_url)
    try:
        await conn.execute("SET search_path TO attribution")
        # A secret stored in clear before this release: read as it is until resealed.
        await conn.execute(
            "INSERT INTO integrations (id, tenant_id, provider, account, secret) "
            "VALUES ('int_legacy', 'acme', 'stripe', 'legacy', $1)",
            LEGACY_SECRET,
        )
        assert await _stripe_ping(env, "int_legacy", LEGACY_SECRET) == 200

        # Rotation: a new key first, the service's (dev) key kept as an old one.
        old = env.settings.secret_box()
        new_key = Fernet.generate_key().decode()
        rotated = SecretBox([new_key, env.settings.secrets_key])
        batches = []
        while n := await reseal_batch(conn, rotated, SEALED[0], limit=2):
            batches.append(n)
        assert batches == [2, 1]  # bounded batches: at most `limit` rows per transaction
        stored = [r["secret"] for r in await conn.fetch("SELECT secret FROM integrations")]
        assert all(s.startswith(rotated.current_prefix) for s in stored)
        only_new = SecretBox([new_key])
        assert sorted(only_new.open(s) for s in stored) == sorted(
            [SHOP_SECRET, STRIPE_SECRET, LEGACY_SECRET]
        )
        with pytest.raises(Exception, match="neither SECRETS_KEY nor SECRETS_OLD_KEYS"):
            old.open(stored[0])
    finally:
        await conn.close()
    dump = await dump_text_columns(env.ns.database_url, "attribution")
    assert not {SHOP_SECRET, STRIPE_SECRET, LEGACY_SECRET} & set(dump.split())
    assert LEGACY_SECRET not in dump

"""Signing secrets at rest (issue 19): the database holds every endpoint secret sealed under
SECRETS_KEY, never the secret itself; after a key rotation the service's resealer moves every
row to the new key (a secret stored in clear before sealing existed too) and deliveries keep
verifying under the secrets the merchant holds."""

from __future__ import annotations

import dataclasses

import asyncpg
import pytest
from cryptography.fernet import Fernet

from devstack.testing import dump_text_columns, eventually
from servicekit.secretbox import PREFIX, key_id

from .test_webhooks import (
    Env,
    Receiver,
    create_endpoint,
    env,  # noqa: F401 (the fixture)
    reward_available,
    serve_receiver,
)

pytestmark = pytest.mark.integration
LEGACY_SECRET = "whsec_bGVnYWN5LXNlY3JldC1pbi1jbGVhciEh"


async def test_a_dump_shows_no_signing_secret_and_rotation_reseals(env: Env) -> None:  # noqa: F811
    receiver = Receiver(clock=env.clock)
    async with serve_receiver(receiver) as base:
        async with env.service() as (client, _app):
            endpoint = await create_endpoint(client, receiver, base, "/s")
            first = endpoint["secret"]
            r = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
            second = r.json()["secret"]
            await env.publish(reward_available("rwd_a"))
            await eventually(lambda: len(receiver.on("/s")) == 1)
        dump = await dump_text_columns(env.ns.database_url, "notification")
        assert first not in dump and second not in dump
        assert dump.count(f"webhook_endpoint_secrets.secret: {PREFIX}") == 2

        conn = await asyncpg.connect(env.ns.database_url)
        try:
            # A secret stored in clear before this release.
            await conn.execute(
                "INSERT INTO notification.webhook_endpoint_secrets (endpoint_id, secret) "
                "VALUES ($1, $2)",
                endpoint["id"],
                LEGACY_SECRET,
            )
            # Rotation of the envelope key: the new one first, the old one kept for reads.
            new_key = Fernet.generate_key().decode()
            rotated = dataclasses.replace(
                env,
                settings=env.settings.model_copy(
                    update={"secrets_key": new_key, "secrets_old_keys": env.settings.secrets_key}
                ),
            )
            new_prefix = f"{PREFIX}{key_id(new_key)}:"

            async def all_resealed() -> bool:
                rows = await conn.fetch("SELECT secret FROM notification.webhook_endpoint_secrets")
                return len(rows) == 3 and all(r["secret"].startswith(new_prefix) for r in rows)

            async with rotated.service() as (client, _app):
                await eventually(all_resealed)  # the resealer runs at start
                await env.publish(reward_available("rwd_b"))
                await eventually(lambda: len(receiver.on("/s")) == 2)
        finally:
            await conn.close()
    # All three still sign (the overlap of the endpoint rotation has not run out), each
    # verified by the receiver with the secret the merchant holds.
    assert len(receiver.on("/s")[1].headers["webhook-signature"].split()) == 3
    assert receiver.rejected == []
    dump = await dump_text_columns(env.ns.database_url, "notification")
    assert first not in dump and second not in dump and LEGACY_SECRET not in dump

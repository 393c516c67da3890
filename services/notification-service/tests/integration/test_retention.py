"""Body retention (issue 19): settled webhook messages and mails older than their retention lose
their bodies (the message body and the receiver's answers; the mail's context, address and
last error) in bounded batches; a message still being delivered, a queued mail and young rows
keep theirs; a pruned delivery cannot be resent; /metrics counts what was pruned."""

from __future__ import annotations

import re

import asyncpg
import pytest

from devstack.testing import dump_text_columns, eventually
from notification_service.retention import handlers as retention
from servicekit.retention import Pruner

from .test_webhooks import (
    Env,
    Receiver,
    create_endpoint,
    deliveries,
    env,  # noqa: F401 (the fixture)
    reward_available,
    serve_receiver,
)

pytestmark = pytest.mark.integration
ADDRESS = "ann.retained@example.com"


def _pruned(metrics: str, table: str) -> float:
    m = re.search(
        rf'^referral_retention_pruned_rows_total\{{table="{table}"\}} (\S+)$', metrics, re.M
    )
    return float(m.group(1)) if m else 0.0


async def _mail(conn: asyncpg.Connection, mail_id: str, status: str, age: str) -> None:
    await conn.execute(
        f"""
        INSERT INTO emails (id, tenant_id, template, cause_key, recipient_kind, recipient_id,
                            program_id, to_address, context, status, next_attempt_at,
                            last_error, created_at)
        VALUES ($1, 'acme', 'reward_available', $1, 'advocate', 'adv_1', 'prg_1', $2,
                '{{"amount": "20.00", "message": "hi Ann"}}', $3,
                CASE WHEN $3 = 'queued' THEN now() END, '550 no such user ann',
                now() - interval '{age}')
        """,  # noqa: S608 (constants of this test)
        mail_id,
        ADDRESS,
        status,
    )


async def test_old_bodies_are_cleared_young_and_unsettled_ones_stay(env: Env) -> None:  # noqa: F811
    receiver = Receiver(clock=env.clock)
    async with serve_receiver(receiver) as base, env.service() as (client, app):
        endpoint = await create_endpoint(client, receiver, base, "/r")
        for reward_id in ("rwd_old", "rwd_pending", "rwd_young"):
            await env.publish(reward_available(reward_id))
        await eventually(lambda: len(receiver.on("/r")) == 3)
        conn = await asyncpg.connect(
            env.ns.database_url, server_settings={"search_path": "notification"}
        )
        try:

            async def settled() -> bool:
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) = 3 FROM webhook_deliveries WHERE status = 'delivered'"
                    )
                )

            await eventually(settled)
            by_reward = {
                r["reward"]: r["id"]
                for r in await conn.fetch(
                    "SELECT id, body::jsonb #>> '{data,reward_id}' AS reward FROM webhook_messages"
                )
            }
            await conn.execute(
                "UPDATE webhook_messages SET created_at = now() - interval '100 days' "
                "WHERE id = ANY($1)",
                [by_reward["rwd_old"], by_reward["rwd_pending"]],
            )
            await conn.execute(
                "UPDATE webhook_deliveries SET status = 'pending', "
                "next_attempt_at = now() + interval '1 day' WHERE message_id = $1",
                by_reward["rwd_pending"],
            )
            await conn.execute(
                "UPDATE webhook_attempts SET response_body = 'ok ann' WHERE delivery_id IN "
                "(SELECT id FROM webhook_deliveries WHERE message_id = $1)",
                by_reward["rwd_old"],
            )
            await _mail(conn, "eml_old_sent", "sent", "100 days")
            await _mail(conn, "eml_old_failed", "failed", "95 days")
            await _mail(conn, "eml_old_queued", "queued", "100 days")
            await _mail(conn, "eml_young", "sent", "10 days")
            metrics = (await client.get("/metrics")).text
            before = {t: _pruned(metrics, t) for t in ("emails", "webhook_messages")}

            pruner = Pruner(app.state.runtime, retention.steps(90, 90), batch=1, interval=60)
            assert await pruner.run_once() == {"emails": 2, "webhook_messages": 1}
            assert await pruner.run_once() == {"emails": 0, "webhook_messages": 0}

            bodies = {
                r["id"]: r["body"]
                for r in await conn.fetch("SELECT id, body FROM webhook_messages")
            }
            assert bodies[by_reward["rwd_old"]] is None
            assert bodies[by_reward["rwd_pending"]] is not None
            assert bodies[by_reward["rwd_young"]] is not None
            mails = {
                r["id"]: (r["context"], r["to_address"], r["last_error"], r["status"])
                for r in await conn.fetch("SELECT * FROM emails")
            }
            assert mails["eml_old_sent"] == ("{}", None, None, "sent")
            assert mails["eml_old_failed"] == ("{}", None, None, "failed")
            assert mails["eml_old_queued"][1] == ADDRESS and mails["eml_young"][1] == ADDRESS
        finally:
            await conn.close()

        dump = await dump_text_columns(env.ns.database_url, "notification")
        assert "ok ann" not in dump and "rwd_old" not in dump and "rwd_young" in dump
        # A delivery whose message lost its body cannot go out again.
        [old] = [
            d
            for d in await deliveries(client, endpoint["id"])
            if d["message_id"] == by_reward["rwd_old"]
        ]
        r = await client.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{old['id']}/resend"
        )
        assert r.status_code == 409 and "retention" in r.json()["detail"], r.text
        metrics = (await client.get("/metrics")).text
        assert _pruned(metrics, "emails") - before["emails"] == 2
        assert _pruned(metrics, "webhook_messages") - before["webhook_messages"] == 1

"""Every collection of notification-service has a cursor-paginated list, found from the route
table (every GET answering a `Page`; every POST that creates must have one), and each list
walks every item that existed exactly once while items are being added."""

from __future__ import annotations

import itertools

import asyncpg
import pytest

from devstack.testing import Collection, eventually, walk_while_inserting
from notification_service.config import Settings
from notification_service.main import create_app
from servicekit.pagination import collections, unlisted_creates

from .test_webhooks import Env, Receiver, env, reward_available, serve_receiver  # noqa: F401

pytestmark = pytest.mark.integration

# POST routes that answer 201 without creating an item of a collection, and why.
NOT_COLLECTIONS = {
    "/v1/invites": "queues mails: they are items of /v1/emails",
    "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/resend": (
        "a new delivery: an item of the endpoint's /deliveries"
    ),
    "/v1/webhook-endpoints/{endpoint_id}/replay": "queues deliveries: items of /deliveries",
    "/v1/webhook-endpoints/{endpoint_id}/test": "a test delivery: an item of /deliveries",
}
_n = itertools.count()


def _lists(ctx: Env, client: object, db: asyncpg.Connection, base: str) -> dict[str, Collection]:
    import httpx

    assert isinstance(client, httpx.AsyncClient)

    async def endpoint(_: dict[str, str] | None = None) -> str:
        body = {"url": f"{base}/h{next(_n)}", "event_types": ["reward.available.v1"]}
        r = await client.post("/v1/webhook-endpoints", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def endpoint_params() -> dict[str, str]:
        return {"endpoint_id": await endpoint()}

    async def delivery(p: dict[str, str]) -> str:
        reward = f"rwd_{next(_n)}"
        await ctx.publish(reward_available(reward))

        async def delivered() -> str | None:
            found: str | None = await db.fetchval(
                """
                SELECT d.id FROM webhook_deliveries d
                JOIN webhook_messages m ON m.id = d.message_id
                WHERE d.endpoint_id = $1 AND m.body::text LIKE '%' || $2 || '%'
                """,
                p["endpoint_id"],
                f'"{reward}"',
            )
            return found

        found: str = await eventually(delivered)
        return found

    async def email(_: dict[str, str]) -> str:
        # A mail the queue has settled (failed: never sent again), as the consumers write them.
        n = next(_n)
        await db.execute(
            """
            INSERT INTO emails (id, tenant_id, template, cause_key, recipient_kind, recipient_id,
                                program_id, status, last_error)
            VALUES ($1, 'acme', 'reward_available', $2, 'advocate', $3, 'prg_1', 'failed', 'x')
            """,
            f"eml_{n}",
            f"cause_{n}",
            f"adv_{n}",
        )
        return f"eml_{n}"

    async def suppression(_: dict[str, str]) -> str:
        address = f"a{next(_n)}@example.com"
        r = await client.post("/v1/email-suppressions", json={"email": address, "reason": "manual"})
        assert r.status_code == 201, r.text
        return address

    async def program() -> dict[str, str]:
        return {"program_id": f"prg_t{next(_n)}"}

    async def template(p: dict[str, str]) -> str:
        # one template in ever new locales: the list's items, by template then locale
        locale = f"de-n{next(_n):04d}"
        body = {"subject": "s", "html": "<p>h</p>", "text": "t"}
        r = await client.put(
            f"/v1/programs/{p['program_id']}/email-templates/invite/{locale}", json=body
        )
        assert r.status_code == 200, r.text
        return str(r.json()["locale"])

    return {
        "/v1/programs/{program_id}/email-templates": Collection(
            template, program, id_field="locale"
        ),
        "/v1/webhook-endpoints": Collection(endpoint),
        "/v1/webhook-endpoints/{endpoint_id}/deliveries": Collection(delivery, endpoint_params),
        "/v1/emails": Collection(email),
        "/v1/email-suppressions": Collection(suppression, id_field="email"),
    }


PATHS = [
    "/v1/email-suppressions",
    "/v1/emails",
    "/v1/programs/{program_id}/email-templates",
    "/v1/webhook-endpoints",
    "/v1/webhook-endpoints/{endpoint_id}/deliveries",
]


def test_every_collection_has_a_list_and_a_walk_below() -> None:
    app = create_app(Settings(environment="dev"))
    assert unlisted_creates(app, NOT_COLLECTIONS) == []
    assert collections(app) == PATHS


@pytest.mark.parametrize("path", PATHS)
async def test_each_list_walks_every_item_once_under_inserts(env: Env, path: str) -> None:  # noqa: F811
    db = await asyncpg.connect(env.ns.database_url, server_settings={"search_path": "notification"})
    receiver = Receiver()
    try:
        async with serve_receiver(receiver) as base, env.service() as (client, _):
            lists = _lists(env, client, db, base)
            assert sorted(lists) == PATHS
            await walk_while_inserting(client, path, lists[path])
    finally:
        await db.close()

"""Workspaces, API keys and the audit log through the HTTP API on real Postgres and Kafka."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from referral_events import CloudEvent, topics

pytestmark = pytest.mark.integration


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_workspace_keys_lifecycle(env: Any) -> None:
    c = env.client
    r = await c.post("/v1/workspaces", json={"name": "Second brand", "plan": "free"})
    assert r.status_code == 201, r.text
    ws = r.json()
    admin = ws["admin_key"]
    assert admin["key"].startswith("rk_live_") and admin["scopes"] == ["admin"]
    assert admin["prefix"] == admin["key"][:12]

    # A workspace admin manages keys but not workspaces.
    r = await c.get("/v1/workspaces", headers=bearer(admin["key"]))
    assert r.status_code == 403
    r = await c.post(
        "/v1/api-keys",
        headers=bearer(admin["key"]),
        json={"name": "shop", "scopes": ["programs:read", "nope", "admin"]},
    )
    assert r.status_code == 422 and r.json()["field"] == "/scopes/1", r.text
    r = await c.post(
        "/v1/api-keys",
        headers=bearer(admin["key"]),
        json={"name": "shop", "scopes": ["programs:read", "programs:write"], "test": True},
    )
    assert r.status_code == 201, r.text
    shop = r.json()
    assert shop["key"].startswith("rk_test_") and shop["workspace_id"] == ws["id"]

    # The new key works at once; its scope is enforced.
    r = await c.post(
        "/v1/programs",
        headers=bearer(shop["key"]),
        json={"name": "P", "landing_url": "https://shop.example.com"},
    )
    assert r.status_code == 201, r.text
    assert (await c.get("/v1/api-keys", headers=bearer(shop["key"]))).status_code == 403

    # Secrets are shown once.
    r = await c.get("/v1/api-keys", headers=bearer(admin["key"]))
    assert r.status_code == 200
    listed = {k["id"]: k for k in r.json()["items"]}
    assert set(listed) == {admin["id"], shop["id"]} and "key" not in listed[shop["id"]]

    # last_used_at: noted in memory, written by the usage worker (at most once a minute).
    from link_service.workspaces.usage import KeyUsage

    [usage] = [w for w in env.app.state.runtime.workers if isinstance(w, KeyUsage)]
    await usage.flush()
    r = await c.get(f"/v1/api-keys/{shop['id']}", headers=bearer(admin["key"]))
    assert r.json()["last_used_at"] is not None, r.text

    # Another workspace's key: 404.
    r = await c.get(f"/v1/api-keys/{shop['id']}")
    assert r.status_code == 404
    r = await c.delete(f"/v1/api-keys/{shop['id']}")
    assert r.status_code == 404

    # Scope change, rotation, revocation.
    r = await c.patch(
        f"/v1/api-keys/{shop['id']}",
        headers=bearer(admin["key"]),
        json={"scopes": ["programs:read"]},
    )
    assert r.status_code == 200 and r.json()["scopes"] == ["programs:read"]
    r = await c.post(f"/v1/api-keys/{shop['id']}/rotate", headers=bearer(admin["key"]))
    assert r.status_code == 201, r.text
    rotated = r.json()
    assert rotated["scopes"] == ["programs:read"] and rotated["key"].startswith("rk_test_")
    for key in (shop["key"], rotated["key"]):
        assert (await c.get("/v1/programs", headers=bearer(key))).status_code == 200
    r = await c.delete(f"/v1/api-keys/{shop['id']}", headers=bearer(admin["key"]))
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    revoked = await c.get("/v1/programs", headers=bearer(shop["key"]))
    assert revoked.status_code == 401
    assert (await c.get("/v1/programs", headers=bearer(rotated["key"]))).status_code == 200

    # Revoked, expired-looking, malformed and unknown keys: one identical answer.
    bodies = {revoked.text.replace(revoked.json().get("instance", ""), "")}
    for bad in ("rk_live_" + "x" * 43, "garbage", rotated["key"] + "x"):
        r = await c.get("/v1/programs", headers=bearer(bad))
        assert r.status_code == 401
        bodies.add(r.text.replace(r.json().get("instance", ""), ""))
    assert len(bodies) == 1, bodies

    # The audit log: who did what, paged by an opaque cursor.
    seen: list[dict[str, object]] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = await c.get("/v1/audit-log", headers=bearer(admin["key"]), params=params)
        assert r.status_code == 200, r.text
        seen += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    actions = [e["action"] for e in seen]
    assert actions == [
        "workspace.created",
        "api_key.created",
        "api_key.created",
        "api_key.updated",
        "api_key.created",
        "api_key.rotated",
        "api_key.revoked",
    ]
    assert seen[3]["actor_key_id"] == admin["id"]
    assert seen[3]["details"] == {
        "scopes": [["programs:read", "programs:write"], ["programs:read"]]
    }
    r = await c.get("/v1/audit-log", headers=bearer(admin["key"]), params={"cursor": "zz"})
    assert r.status_code == 422 and r.json()["field"] == "/cursor"
    r = await c.get("/v1/audit-log", headers=bearer(admin["key"]), params={"limit": 1000})
    assert r.status_code == 422

    # Every change is an event keyed by the workspace; none carries a secret.
    def done(evs: list[CloudEvent]) -> bool:
        return sum(e.type == "api_key.revoked.v1" for e in evs) >= 1

    evs = await env.events(topics.LINK_EVENTS, done)
    mine = [e for e in evs if e.tenantid == ws["id"] and not e.type.startswith("program.")]
    assert [e.type for e in mine] == [
        "workspace.created.v1",
        "api_key.created.v1",
        "api_key.created.v1",
        "api_key.updated.v1",
        "api_key.created.v1",
        "api_key.revoked.v1",
    ]
    raw = "".join(e.to_json().decode() for e in mine)
    for secret in (admin["key"], shop["key"], rotated["key"]):
        assert secret not in raw


async def test_expired_key_is_refused(env: Any) -> None:
    c = env.client
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    r = await c.post(
        "/v1/api-keys",
        json={"name": "short", "scopes": ["programs:read"], "expires_at": soon.isoformat()},
    )
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    assert (await c.get("/v1/programs", headers=bearer(key))).status_code == 200
    await asyncio.sleep(1.6)
    assert (await c.get("/v1/programs", headers=bearer(key))).status_code == 401
    past = datetime.now(UTC) - timedelta(seconds=1)
    r = await c.post(
        "/v1/api-keys",
        json={"name": "past", "scopes": ["programs:read"], "expires_at": past.isoformat()},
    )
    assert r.status_code == 422 and r.json()["field"] == "/expires_at"


async def test_keys_cli_creates_lists_and_revokes_through_the_same_handlers(
    env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    import json

    from link_service.workspaces.cli import KEYS

    settings = env.settings()

    def run(*argv: str) -> tuple[int, list[dict[str, Any]]]:
        parser = argparse.ArgumentParser()
        KEYS.arguments(parser)
        code = KEYS.run(parser.parse_args(list(argv)), settings)
        out = capsys.readouterr().out
        return code, [json.loads(line) for line in out.splitlines() if line.strip()]

    code, [created] = await asyncio.to_thread(
        run, "create", "--workspace", "acme", "--name", "ops", "--scopes", "programs:read"
    )
    assert code == 0 and created["key"].startswith("rk_live_")
    assert (await env.client.get("/v1/programs", headers=bearer(created["key"]))).status_code == 200
    code, listed = await asyncio.to_thread(run, "list", "--workspace", "acme")
    assert code == 0 and [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]
    code, _ = await asyncio.to_thread(
        run, "create", "--workspace", "acme", "--name", "x", "--scopes", "codes:read"
    )
    assert code == 2
    code, [revoked] = await asyncio.to_thread(run, "revoke", "--workspace", "acme", created["id"])
    assert code == 0 and revoked["revoked_at"] is not None
    await asyncio.sleep(1.1)  # this replica's cache (API_KEY_CACHE_TTL_SECONDS)
    assert (await env.client.get("/v1/programs", headers=bearer(created["key"]))).status_code == 401
    r = await env.client.get("/v1/audit-log")
    assert [e["actor_key_id"].startswith("cli:") for e in r.json()["items"]] == [True, True]

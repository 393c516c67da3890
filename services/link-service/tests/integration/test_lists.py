"""Every collection of link-service has a cursor-paginated list, found from the route table
(every GET answering a `Page`, and every POST that creates must have one), and each list walks
every item that existed exactly once while items are being added."""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg
import pytest

from devstack.testing import Collection, walk_while_inserting
from link_service.config import Settings
from link_service.main import create_app
from servicekit.pagination import collections, unlisted_creates

pytestmark = pytest.mark.integration

# POST routes that answer 201 without creating an item of a collection, and why.
NOT_COLLECTIONS = {
    "/v1/advocates/{advocate_id}/tokens": "a signed token; none is stored",
    "/v1/api-keys/{key_id}/rotate": "the new key is an item of /v1/api-keys",
    # a privacy request is read at /v1/privacy/requests/{id}; every one is listed in the
    # workspace's audit log (/v1/audit-log, `privacy.<kind>.requested`), without identifiers
    "/v1/privacy/exports": "a privacy request: /v1/privacy/requests/{id} and the audit log",
    "/v1/privacy/erasures": "a privacy request: /v1/privacy/requests/{id} and the audit log",
}
_n = itertools.count()


def _lists(env: Any) -> dict[str, Collection]:
    client = env.client if env is not None else None

    async def program(_: dict[str, str] | None = None) -> str:
        body = {"name": f"P{next(_n)}", "landing_url": "https://shop.example.com/"}
        r = await client.post("/v1/programs", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def program_params() -> dict[str, str]:
        return {"program_id": await program()}

    async def advocate(p: dict[str, str]) -> str:
        body = {"customer_id": f"cus_{next(_n)}"}
        r = await client.post(f"/v1/programs/{p['program_id']}/advocates", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def job(p: dict[str, str]) -> str:
        file = f"customer_id,email\ncus_j{next(_n)},a{next(_n)}@example.com\n"
        r = await client.post(
            f"/v1/programs/{p['program_id']}/enrollment-jobs",
            content=file,
            headers={"content-type": "text/csv"},
        )
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    async def job_params() -> dict[str, str]:
        return {"job_id": await job(await program_params())}

    async def error(p: dict[str, str]) -> int:
        # A row the worker found wrong, as it records them.
        row = 1000 + next(_n)
        db = await asyncpg.connect(env.ns.database_url, server_settings={"search_path": "link"})
        try:
            await db.execute(
                "INSERT INTO enrollment_job_rows (job_id, row_no, line_no, status, error, field)"
                " VALUES ($1, $2, $3, 'error', 'not an email address', 'email')",
                p["job_id"],
                row,
                row + 1,
            )
        finally:
            await db.close()
        return row

    async def workspace(_: dict[str, str]) -> str:
        r = await client.post("/v1/workspaces", json={"name": f"W{next(_n)}"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def key(_: dict[str, str]) -> str:
        body = {"name": f"k{next(_n)}", "scopes": ["programs:read"]}
        r = await client.post("/v1/api-keys", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    return {
        "/v1/programs": Collection(program),
        "/v1/advocates": Collection(advocate, program_params),
        "/v1/programs/{program_id}/advocates": Collection(advocate, program_params),
        "/v1/programs/{program_id}/enrollment-jobs": Collection(job, program_params),
        "/v1/enrollment-jobs/{job_id}/errors": Collection(error, job_params, id_field="row"),
        "/v1/workspaces": Collection(workspace),
        "/v1/api-keys": Collection(key),
        # Each key created is one audit entry naming it.
        "/v1/audit-log": Collection(key, id_field="target_id"),
    }


def test_every_collection_has_a_list_and_a_walk_below() -> None:
    app = create_app(Settings(environment="dev"))
    assert unlisted_creates(app, NOT_COLLECTIONS) == []
    assert collections(app) == sorted(_lists(None))


@pytest.mark.parametrize("path", sorted(_lists(None)))
async def test_each_list_walks_every_item_once_under_inserts(env: Any, path: str) -> None:
    await walk_while_inserting(env.client, path, _lists(env)[path])


async def test_advocate_lookups_filters_and_cursor_refusals(env: Any) -> None:
    c = env.client
    lists = _lists(env)
    pid = (await lists["/v1/advocates"].setup())["program_id"]  # type: ignore[misc]
    other = await lists["/v1/programs"].add({})
    ann = (await c.post(f"/v1/programs/{pid}/advocates", json={"customer_id": "cus_ann"})).json()
    await c.post(f"/v1/programs/{other}/advocates", json={"customer_id": "cus_ann"})
    bob = (await c.post(f"/v1/programs/{pid}/advocates", json={"customer_id": "cus_bob"})).json()
    await c.post(f"/v1/advocates/{bob['id']}/block", json={"reason": "fraud"})

    def ids(r: Any) -> list[str]:
        assert r.status_code == 200, r.text
        return [a["id"] for a in r.json()["items"]]

    # By customer id: one per program; in one program, the one.
    assert len(ids(await c.get("/v1/advocates", params={"customer_id": "cus_ann"}))) == 2
    r = await c.get(f"/v1/programs/{pid}/advocates", params={"customer_id": "cus_ann"})
    assert ids(r) == [ann["id"]]
    # By code, in any case.
    r = await c.get("/v1/advocates", params={"code": ann["code"].lower()})
    assert ids(r) == [ann["id"]] and r.json()["items"][0]["code"] == ann["code"]
    assert ids(await c.get(f"/v1/programs/{pid}/advocates", params={"status": "blocked"})) == [
        bob["id"]
    ]
    r = await c.get(f"/v1/programs/{pid}/advocates", params={"created_after": bob["created_at"]})
    assert ids(r) == [bob["id"]]
    r = await c.get(f"/v1/programs/{pid}/advocates", params={"created_before": bob["created_at"]})
    assert ids(r) == [ann["id"]]
    # Another workspace sees none of them; an unknown program answers 404.
    assert ids(await c.get("/v1/advocates", headers=env.foreign)) == []
    r = await c.get(f"/v1/programs/{pid}/advocates", headers=env.foreign)
    assert r.status_code == 404
    # A cursor we did not give, or too large a page, answers 422 naming the parameter.
    first = await c.get(f"/v1/programs/{pid}/advocates", params={"limit": 1})
    cursor = first.json()["next_cursor"]
    assert first.headers["link"].startswith("<http") and "cursor=" in first.headers["link"]
    for bad in ("zz", cursor[:-3], "eyJhIjoxfQ", cursor + "x"):
        r = await c.get("/v1/advocates", params={"cursor": bad})
        assert r.status_code == 422 and r.json()["field"] == "/cursor", (bad, r.text)
    r = await c.get("/v1/advocates", params={"limit": 201})
    assert r.status_code == 422

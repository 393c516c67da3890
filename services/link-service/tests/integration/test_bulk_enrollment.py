from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from rich.console import Console

from devstack.paths import free_port
from devstack.testing import eventually
from link_service.enrollment.cli import enroll_bulk
from link_service.main import create_app
from servicekit.problems import pointer

pytestmark = pytest.mark.integration


def _csv(n: int, bad: dict[int, str]) -> bytes:
    lines = ["customer_id,email,name,marketing_consent"]
    for i in range(1, n + 1):
        lines.append(
            bad.get(i, f"cus_{i},c{i}@example.com,Customer {i},{'yes' if i % 2 else 'no'}")
        )
    return ("\n".join(lines) + "\n").encode()


async def _finished(client: Any, job_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        job = (await client.get(f"/v1/enrollment-jobs/{job_id}")).json()
        return job if job["status"] == "done" else None

    result: dict[str, Any] = await eventually(done, timeout=120)
    return result


@pytest.mark.parametrize("link_settings", [{"enrollment_chunk_rows": 300}], indirect=True)
async def test_bulk_enrollment_reports_bad_rows_and_rerunning_changes_nothing(env) -> None:
    client = env.client
    r = await client.post(
        "/v1/programs", json={"name": "Bulk", "landing_url": "https://shop.example.com"}
    )
    pid = r.json()["id"]
    # one customer enrolled by hand before the import: the import must leave it as it is
    r = await client.post(f"/v1/programs/{pid}/advocates", json={"customer_id": "cus_7"})
    assert r.status_code == 201
    before = r.json()

    bad = {
        5: "cus_5,not-an-email,Five,yes",
        11: "cus_11,c11@example.com,Eleven,yes,surplus",
        500: ",nobody@example.com,No Id,no",
        999: "cus_999,c999@example.com,Nine,perhaps",
    }
    file = _csv(1000, bad)
    r = await client.post(
        f"/v1/programs/{pid}/enrollment-jobs", content=file, headers={"content-type": "text/csv"}
    )
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/enrollment-jobs/{r.json()['id']}"
    assert r.json()["total_rows"] == 1000
    job = await _finished(client, r.json()["id"])
    assert (job["enrolled"], job["existing"], job["failed"]) == (995, 1, 4)
    assert job["done_rows"] == 1000
    assert [(e["row"], e["line"], e["field"]) for e in job["errors"]] == [
        (5, 6, "email"),
        (11, 12, "row"),
        (500, 501, "customer_id"),
        (999, 1000, "marketing_consent"),
    ]
    assert "malformed CSV row" in job["errors"][1]["message"]
    page = (await client.get(f"/v1/enrollment-jobs/{job['id']}/errors?after_row=11")).json()
    assert [e["row"] for e in page["items"]] == [500, 999] and page["next_cursor"] is None

    conn = await asyncpg.connect(env.ns.database_url)
    try:
        count_sql = "SELECT count(*) FROM link.advocates WHERE program_id = $1"
        # outbox rows ever written (the relay deletes link-service's rows as it publishes them)
        outbox_sql = "SELECT last_value FROM link.outbox_seq_seq"
        assert await conn.fetchval(count_sql, pid) == 996
        events_before = await conn.fetchval(outbox_sql)
        codes = await conn.fetchval(
            "SELECT count(DISTINCT code_key) FROM link.codes WHERE program_id = $1", pid
        )
        assert codes == 996

        # the same file again: every good row is already enrolled, nothing changes
        r = await client.post(
            f"/v1/programs/{pid}/enrollment-jobs?format=csv",
            content=file,
            headers={"content-type": "application/octet-stream"},
        )
        again = await _finished(client, r.json()["id"])
        assert (again["enrolled"], again["existing"], again["failed"]) == (0, 996, 4)
        assert await conn.fetchval(count_sql, pid) == 996
        assert await conn.fetchval(outbox_sql) == events_before
    finally:
        await conn.close()
    r = await client.get(f"/v1/advocates/{before['id']}")
    assert r.json()["code"] == before["code"]

    # an enrolled row's events carry what notification-service needs
    events = await env.events(
        "link.events",
        lambda es: sum(e.type == "advocate.enrolled.v1" for e in es) >= 996,
        wait=120,
    )
    enrolled = [e for e in events if e.type == "advocate.enrolled.v1"]
    assert len({e.data["advocate_id"] for e in enrolled}) == 996
    one = next(e for e in enrolled if e.data["customer_id"] == "cus_3")
    assert one.data["email"] == "c3@example.com" and one.data["marketing_consent"] is True
    assert one.data["link_url"].endswith("/r/" + one.data["code"])

    # NDJSON, file-level problems, other tenants
    nd = b'{"customer_id": "n1", "locale": "de"}\n{"customer_id": 5}\n'
    r = await client.post(
        f"/v1/programs/{pid}/enrollment-jobs",
        content=nd,
        headers={"content-type": "application/x-ndjson"},
    )
    job = await _finished(client, r.json()["id"])
    assert (job["enrolled"], job["failed"]) == (1, 1)
    assert job["errors"][0]["row"] == 2 and job["errors"][0]["field"] == "customer_id"
    for content, ctype, field in [
        (b"email\nx@example.com\n", "text/csv", "file"),
        (b"", "text/csv", "file"),
        (b"customer_id\nc1\n", "application/json", "format"),
    ]:
        r = await client.post(
            f"/v1/programs/{pid}/enrollment-jobs", content=content, headers={"content-type": ctype}
        )
        assert r.status_code == 422 and r.json()["field"] == pointer(field), r.text
        assert r.headers["content-type"] == "application/problem+json"
    r = await client.get(f"/v1/enrollment-jobs/{job['id']}", headers=env.foreign)
    assert r.status_code == 404 and r.json()["field"] == "/job_id"
    r = await client.post(
        f"/v1/programs/{pid}/enrollment-jobs",
        content=file,
        headers={"content-type": "text/csv", **env.foreign},
    )
    assert r.status_code == 404 and r.json()["field"] == "/program_id"


async def test_enrollment_resumes_after_a_restart(env, tmp_path: Path) -> None:
    """The job lives in Postgres: a new app instance (a restart) finishes it; and the CLI
    uploads a file and follows the job to its end."""
    r = await env.client.post(
        "/v1/programs", json={"name": "Bulk", "landing_url": "https://shop.example.com"}
    )
    pid = r.json()["id"]
    settings = env.settings(http_port=free_port(), enrollment_chunk_rows=100)
    path = tmp_path / "customers.ndjson"
    path.write_text(
        "\n".join(json.dumps({"customer_id": f"c{i}", "name": f"N{i}"}) for i in range(1, 2001))
        + "\n{broken\n"
    )

    async def serve(stop_after_rows: int | None) -> dict[str, Any] | None:
        app = create_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=settings.http_port, log_level="warning")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        out = io.StringIO()
        try:
            if stop_after_rows is not None:
                job = await asyncio.to_thread(_upload, settings.http_port, pid, env.key, path)
                conn = await asyncpg.connect(env.ns.database_url)
                try:
                    await eventually(lambda: _done_rows(conn, job), timeout=120)
                finally:
                    await conn.close()
                return {"id": job}
            return await asyncio.to_thread(
                enroll_bulk,
                path,
                program_id=pid,
                api_url=f"http://127.0.0.1:{settings.http_port}",
                api_key=env.key,
                console=Console(file=out, width=200),
                poll_interval=0.2,
            )
        finally:
            server.should_exit = True
            await task
            if stop_after_rows is None:
                assert "done: 0 enrolled, 2000 already enrolled, 1 failed" in out.getvalue()
                assert "rows not enrolled" in out.getvalue()

    first = await serve(stop_after_rows=300)
    assert first is not None
    # another instance (the restarted service) finishes the job the stopped one began ...
    job = await _finished(env.client, first["id"])
    assert (job["enrolled"], job["existing"], job["failed"]) == (2000, 0, 1)
    assert job["errors"][0]["row"] == 2001 and job["errors"][0]["field"] == "row"
    # ... and the CLI's upload of the same file changes nothing
    done = await serve(stop_after_rows=None)
    assert done is not None and (done["enrolled"], done["existing"]) == (0, 2000)


async def _done_rows(conn: asyncpg.Connection, job_id: str) -> bool:
    done: int = await conn.fetchval(
        "SELECT done_rows FROM link.enrollment_jobs WHERE id = $1", job_id
    )
    return done >= 300


def _upload(port: int, program_id: str, key: str, path: Path) -> str:
    import httpx

    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/programs/{program_id}/enrollment-jobs",
        content=path.read_bytes(),
        headers={"Authorization": f"Bearer {key}", "content-type": "application/x-ndjson"},
        timeout=60,
    )
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


@pytest.mark.parametrize(
    "link_settings",
    [{"enrollment_chunk_rows": 2, "enrollment_max_attempts": 2, "enrollment_max_rows": 50}],
    indirect=True,
)
async def test_a_bad_job_fails_alone_and_other_workspaces_keep_enrolling(env) -> None:
    """The review: a NUL byte passed validation, Postgres refused the row, the worker retried
    that chunk forever and always claimed the oldest job, stopping every workspace."""
    client = env.client
    ours = (
        await client.post("/v1/programs", json={"name": "A", "landing_url": "https://a.example"})
    ).json()["id"]
    theirs = (
        await client.post(
            "/v1/programs",
            json={"name": "G", "landing_url": "https://g.example"},
            headers=env.foreign,
        )
    ).json()["id"]
    # A NUL in a value is that row's error, naming the field; the rest enrolls.
    r = await client.post(
        f"/v1/programs/{ours}/enrollment-jobs",
        content=b"customer_id,name\ncus_1,Ann\ncus_2,B\x00b\ncus_3,Cy\n",
        headers={"content-type": "text/csv"},
    )
    assert r.status_code == 202, r.text
    job = await _finished(client, r.json()["id"])
    assert (job["enrolled"], job["failed"]) == (2, 1)
    assert [(e["row"], e["field"]) for e in job["errors"]] == [(2, "name")]

    # A job whose chunks keep failing (its stored rows unreadable), queued first: advocates
    # are locked meanwhile so the worker cannot finish it before its rows are broken.
    conn = await asyncpg.connect(env.ns.database_url)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE link.advocates IN EXCLUSIVE MODE")
            r = await client.post(
                f"/v1/programs/{ours}/enrollment-jobs",
                content=_csv(6, {}),
                headers={"content-type": "text/csv"},
            )
            stuck = r.json()["id"]
            await conn.execute(
                "UPDATE link.enrollment_job_rows SET data = '{broken' WHERE job_id = $1", stuck
            )
    finally:
        await conn.close()
    # ... does not stop another workspace's job behind it.
    r = await client.post(
        f"/v1/programs/{theirs}/enrollment-jobs",
        content=_csv(7, {}),
        headers={"content-type": "text/csv", **env.foreign},
    )
    other = r.json()["id"]

    async def finished_other() -> dict[str, Any] | None:
        got = (await client.get(f"/v1/enrollment-jobs/{other}", headers=env.foreign)).json()
        return got if got["status"] == "done" else None

    assert (await eventually(finished_other, timeout=60))["enrolled"] == 7
    # ... and is given up after its bounded attempts: the rows say why, the job finishes.
    failed = await _finished(client, stuck)
    # (the worker may have read the first chunk before the rows were broken)
    assert failed["done_rows"] == 6 and failed["failed"] in (4, 6), failed
    assert "failed after 2 attempts" in failed["errors"][0]["message"]

    # Past the row cap the upload is refused as it streams in.
    r = await client.post(
        f"/v1/programs/{ours}/enrollment-jobs",
        content=_csv(51, {}),
        headers={"content-type": "text/csv"},
    )
    assert r.status_code == 413 and r.json()["field"] == "/file", r.text

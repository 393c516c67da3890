"""Helpers for tests that run services in-process against the real Kafka and Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from asgi_lifespan import LifespanManager
from fastapi import FastAPI


def new_api_key(tenant_id: str) -> tuple[str, dict[str, Any]]:
    """A fresh key and the settings entry (hash only) that accepts it."""
    key = "rk_test_" + secrets.token_urlsafe(16)
    return key, {"tenant_id": tenant_id, "key_sha256": hashlib.sha256(key.encode()).hexdigest()}


# A test module's tests run twice, with the apps' front doors on and off, when its conftest's
# `front_door` fixture is autouse and reads `request.param` (see `front_door`).
FRONT_AND_FASTAPI = pytest.mark.parametrize(
    "front_door", [True, False], ids=["front", "fastapi"], indirect=True
)


@contextmanager
def front_door(monkeypatch: pytest.MonkeyPatch, on: bool) -> Iterator[list[str]]:
    """Apps built inside have their front door (servicekit.front) on or off: the FRONT_DOOR
    setting. Gives the route templates front doors answered, one per request; on leaving,
    checks that the apps followed the setting: off, none got a front door and none answered,
    so FastAPI served every request."""
    from servicekit.app import ServiceApp
    from servicekit.front import FrontRoute

    monkeypatch.setenv("FRONT_DOOR", "true" if on else "false")
    fronts: list[object] = []
    answered: list[str] = []
    set_front, respond = ServiceApp.set_front, FrontRoute.respond

    def recorded_set_front(app: ServiceApp, make: Any) -> None:
        set_front(app, make)
        fronts.append(app.front)

    async def recorded_respond(route: FrontRoute, *args: Any, **kwargs: Any) -> None:
        answered.append(route.template)
        await respond(route, *args, **kwargs)

    monkeypatch.setattr(ServiceApp, "set_front", recorded_set_front)
    monkeypatch.setattr(FrontRoute, "respond", recorded_respond)
    yield answered
    assert all((front is not None) == on for front in fronts), fronts
    assert on or not answered, answered


async def migrate(database_url: str, schema: str, package: str) -> None:
    from servicekit.migrations import upgrade

    await asyncio.to_thread(upgrade, database_url, schema, package)


@asynccontextmanager
async def serve_in_process(
    app: FastAPI, api_key: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers
        ) as client:
            yield client


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    until: Callable[[list[Any]], bool] | None,
    timeout: float = 30.0,
) -> list[Any]:
    """Every record of `topic` from the beginning, read until `until(records)` holds (with
    `until=None`: up to the log end as it is when reading starts)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout
        while not partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} does not exist")
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        if until is None:
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            total: int = sum(ends[tp] - starts[tp] for tp in tps)

            def until(rs: list[Any]) -> bool:
                return len(rs) >= total

        records: list[Any] = []
        while not until(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met on {topic}; read {len(records)} records")
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


async def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Await `check()` until it returns a truthy value (or raises nothing), then return it."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    if last is not None:
        raise last
    raise TimeoutError("condition not met in time")


async def wait_caught_up(
    bootstrap_servers: str, group_ids: list[str], timeout: float = 60.0
) -> None:
    """Wait until every partition each group consumes has its committed offset at the log end,
    i.e. everything produced so far has been handled and committed."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await admin.start()
    await probe.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            behind = {}
            for group in group_ids:
                try:
                    committed = await admin.list_consumer_group_offsets(group)
                except KafkaError as exc:  # coordinator still starting up
                    behind[group] = repr(exc)
                    continue
                if not committed:
                    behind[group] = "no commits yet"
                    continue
                ends = await probe.end_offsets(list(committed))
                for tp, meta in committed.items():
                    if meta.offset < ends[tp]:
                        behind[f"{group} {tp.topic}/{tp.partition}"] = ends[tp] - meta.offset
            if not behind:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumers still behind: {behind}")
            await asyncio.sleep(0.3)
    finally:
        await probe.stop()
        await admin.close()


@asynccontextmanager
async def http_receiver(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on a free loopback port (a real socket, for real HTTP clients)."""
    import uvicorn

    from devstack.paths import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def read_to_end(bootstrap_servers: str, topic: str) -> list[Any]:
    """Every record of `topic` up to its log end as of now."""
    return await read_topic(bootstrap_servers, topic, until=None)


@dataclass
class Collection:
    """How a test fills one list: `setup` creates its parents and gives the list path's
    parameters (and any it needs), `add` creates one item and gives its id; `query` are the
    list's filters (their values formatted with the parameters)."""

    add: Callable[[dict[str, str]], Awaitable[Any]]
    setup: Callable[[], Awaitable[dict[str, str]]] | None = None
    query: dict[str, str] = field(default_factory=dict)
    id_field: str = "id"


async def walk_while_inserting(
    client: httpx.AsyncClient,
    path: str,
    collection: Collection,
    *,
    before: int = 5,
    limit: int = 2,
) -> None:
    """Walk the list at `path` page by page (`limit` items each) while items are added to it
    concurrently (at least one between any two pages), and check that every item that existed
    before the walk is seen exactly once, nothing twice, every page in the one envelope
    (`items`, `next_cursor`) with a `Link: rel="next"` header exactly when a next page exists."""
    params = await collection.setup() if collection.setup is not None else {}
    url = path.format(**params)
    query = {k: v.format(**params) for k, v in collection.query.items()}
    existing = [await collection.add(params) for _ in range(before)]
    added: list[Any] = []
    stop = asyncio.Event()
    inserted = asyncio.Event()
    paged = asyncio.Event()

    async def insert() -> None:
        # One item per page the walk takes (while it reads the next one): a list in ascending
        # order gets its new items at its end, and an inserter left free to outpace the walk's
        # two items a page kept it from ever reaching that end (seen on a loaded CI machine).
        while not stop.is_set():
            added.append(await collection.add(params))
            inserted.set()
            paged.clear()
            await paged.wait()

    task = asyncio.create_task(insert())
    seen: list[Any] = []
    cursor: str | None = None
    try:
        while True:
            page_query: dict[str, Any] = {**query, "limit": limit}
            if cursor is not None:
                page_query["cursor"] = cursor
            r = await client.get(url, params=page_query)
            assert r.status_code == 200, (url, r.text)
            body = r.json()
            assert set(body) == {"items", "next_cursor"}, (url, body)
            assert len(body["items"]) <= limit, url
            seen += [item[collection.id_field] for item in body["items"]]
            cursor = body["next_cursor"]
            link = r.headers.get("link")
            if cursor is None:
                assert link is None, (url, link)
                break
            assert link is not None and link.endswith('rel="next"'), (url, link)
            # Rows land between any two pages (and maybe during one).
            inserted.clear()
            paged.set()
            await asyncio.wait_for(inserted.wait(), 30)
    finally:
        stop.set()
        paged.set()
        await task
    doubled = sorted({i for i in seen if seen.count(i) > 1})
    assert not doubled, f"{url}: seen twice: {doubled}"
    missing = [i for i in existing if i not in seen]
    assert not missing, f"{url}: pre-existing items never seen: {missing}"
    assert added, url


async def dump_text_columns(database_url: str, schema: str) -> str:
    """Every text, varchar, jsonb, json and bytea value of every table of `schema`, one value a
    line: what a database dump would show of it, for tests that search it for a value."""
    conn = await asyncpg.connect(database_url)
    try:
        columns = await conn.fetch(
            """
            SELECT c.table_name, c.column_name, c.data_type
            FROM information_schema.columns c
            JOIN information_schema.tables t
              ON t.table_schema = c.table_schema AND t.table_name = c.table_name
            WHERE c.table_schema = $1 AND t.table_type = 'BASE TABLE'
              AND (c.data_type IN ('text', 'character varying', 'jsonb', 'json', 'bytea')
                   OR c.udt_name IN ('_text', '_varchar'))
            """,
            schema,
        )
        lines: list[str] = []
        for col in columns:
            ident = f'"{schema}"."{col["table_name"]}"'
            value = f'"{col["column_name"]}"::text'
            if col["data_type"] == "bytea":
                value = f"encode(\"{col['column_name']}\", 'escape')"
            rows = await conn.fetch(f"SELECT {value} AS v FROM {ident}")  # noqa: S608
            lines.extend(f"{col['table_name']}.{col['column_name']}: {r['v']}" for r in rows)
        return "\n".join(lines)
    finally:
        await conn.close()


class StatementRecorder:
    """Stands in for an asyncpg connection and keeps each statement a repository function
    sends, with its arguments, answering as a connection that found nothing (for tests that
    then ask Postgres how it would run them: `scans_without_index`)."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def execute(self, query: str, *args: Any, **_: Any) -> str:
        self.statements.append((query, args))
        return "UPDATE 0"

    async def fetch(self, query: str, *args: Any, **_: Any) -> list[Any]:
        self.statements.append((query, args))
        return []

    async def fetchrow(self, query: str, *args: Any, **_: Any) -> None:
        self.statements.append((query, args))

    async def fetchval(self, query: str, *args: Any, **_: Any) -> None:
        self.statements.append((query, args))


def _seq_scans(plan: dict[str, Any]) -> list[str]:
    found = [str(plan["Relation Name"])] if plan["Node Type"] == "Seq Scan" else []
    for child in plan.get("Plans", []):
        found += _seq_scans(child)
    return found


async def scans_without_index(
    database_url: str, schema: str, statements: list[tuple[str, tuple[Any, ...]]]
) -> dict[str, list[str]]:
    """The tables each statement would still read whole with sequential scans switched off
    (no index serves it: its cost grows with the table), by statement; none: {}. Planned, not
    run, on `schema`, in a transaction rolled back."""
    found: dict[str, list[str]] = {}
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        # the services' jsonb codec (servicekit.db): their statements take dicts for jsonb
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SET LOCAL enable_seqscan = off")
        for query, args in statements:
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args)
            doc = json.loads(plan) if isinstance(plan, str) else plan
            if scans := _seq_scans(doc[0]["Plan"]):
                found[" ".join(query.split())] = scans
        await tx.rollback()
        return found
    finally:
        await conn.close()


@asynccontextmanager
async def running(*runnables: Any) -> AsyncIterator[None]:
    """Each runnable's `run()` as a task for the block; then `stop()` each and wait for them."""
    tasks = [asyncio.create_task(r.run()) for r in runnables]
    try:
        yield
    finally:
        for r in runnables:
            await r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)

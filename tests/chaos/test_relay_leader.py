"""Two link-service replicas, both running the outbox relay (one publishes: the one holding the
schema's advisory lock, referral_events.outbox), while redirects write clicks through both; the
replica whose relay holds the lock is kill -9'd mid-run (issue #21). Real processes, the
session's broker and Postgres, a namespace of the test's own.

The leader is found two ways that must agree: the Postgres session holding the advisory lock
(pg_locks -> pid -> pg_stat_activity.application_name `link-outbox-relay`), and which replica's
/metrics says `referral_outbox_relay_leader 1` (both replicas' relay sessions carry the same
application_name, so the lock alone cannot tell them apart).

Then every outbox row is on its topic, none missing and none foreign, and per (topic, key) the
events come in outbox order. Each code's clicks come from one client, one redirect after the
other (each answered once its click is committed), so the rows of one key were written by
transactions that followed one another: that order the relay must keep. Rows of concurrent
transactions have no order of their own (a row may commit after one with a later seq has been
published); with two clients on one code the check failed now and then on a correct relay.
Duplicates are allowed by design, and bounded: publishing is at
least once (a relay killed between the broker's ack and its mark leaves rows that the next
leader publishes again; the consumers' inboxes drop them), so a repeat is a row the killed
leader had sent but not marked: at most one batch (OUTBOX_BATCH_SIZE), and the order checked is
that of each event's first copy, which is what an inbox applies.

How it fails: a relay publishing a batch newest first breaks every busy key's order (checked:
ORDER BY seq DESC in publish_batch put 8 of 9 keys out of order). Two relays publishing at once
(no lock) would fail the one-holder check, and their overlapping batches show as repeats beyond
one batch and keys out of order; a new leader that never takes over leaves the outbox
undrained (the wait times out)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from devstack import services
from devstack.pytest_plugin import Namespace
from devstack.testing import eventually, migrate, new_api_key, read_to_end
from link_service.config import Settings as LinkSettings

from .harness import READY_WITHIN_S, create_program, print_tracebacks

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]

LINK = services.SERVICES[0]
CLIENTS = 6
CODES = CLIENTS  # a code per client: each key's clicks one after another
PAUSE_S = 0.03  # between one client's redirects: some 200 clicks a second in all
BEFORE_KILL_S = 6.0
AFTER_KILL_S = 8.0
# link-service's OUTBOX_BATCH_SIZE (its default; the test sets none): the most one killed leader
# leaves unmarked
BATCH_SIZE = LinkSettings.model_fields["outbox_batch_size"].default
LOCK_ID = zlib.crc32(b"outbox-relay:link")  # as referral_events.outbox.OutboxRelay takes it
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


@dataclass
class Replicas:
    cfg: services.StackConfig
    live: list[services.RunningService]
    headers: dict[str, str]


@pytest.fixture
async def replicas(namespace: Namespace, tmp_path: Path) -> AsyncIterator[Replicas]:
    key, entry = new_api_key("acme")
    # Published rows stay (link-service deletes them as published by default): the outbox is
    # the record of what was committed, held against what reached the topics.
    cfg = namespace.stack_config(
        [entry],
        tmp_path / "logs",
        OUTBOX_POLL_INTERVAL_SECONDS="0.2",
        OUTBOX_KEEP_PUBLISHED_HOURS="72",
    )
    await migrate(cfg.database_url, "link", LINK.package)
    live = [*services.start(cfg, (LINK,)), *services.start(cfg, (LINK,), replica=1)]
    try:
        await asyncio.to_thread(services.wait_ready, live, READY_WITHIN_S)
        yield Replicas(cfg, live, {"Authorization": f"Bearer {key}"})
    finally:
        await asyncio.to_thread(services.stop, live)
        print_tracebacks(tmp_path / "logs")


async def _lock_holders(db: asyncpg.Connection) -> list[asyncpg.Record]:
    """The sessions holding link's relay lock (a bigint key: classid its high half, objid its
    low half, objsubid 1)."""
    return await db.fetch(
        """
        SELECT l.pid, a.application_name
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0
          AND l.objid::bigint = $1 AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        """,
        LOCK_ID,
    )


async def _says_leader(http: httpx.AsyncClient, replica: services.RunningService) -> bool:
    text = (await http.get(f"{replica.url}/metrics")).text
    return any(line == "referral_outbox_relay_leader 1.0" for line in text.splitlines())


async def _leader(
    http: httpx.AsyncClient, db: asyncpg.Connection, live: list[services.RunningService]
) -> tuple[services.RunningService, int]:
    """The one replica leading and its lock session's pid, once both views agree on one."""

    async def agreed() -> tuple[services.RunningService, int] | None:
        holders = await _lock_holders(db)
        leading = [r for r in live if await _says_leader(http, r)]
        if len(holders) != 1 or len(leading) != 1:
            return None
        assert holders[0]["application_name"] == "link-outbox-relay", holders
        return leading[0], int(holders[0]["pid"])

    found: tuple[services.RunningService, int] = await eventually(agreed, timeout=60)
    return found


async def test_relay_leader_killed_outbox_published_in_order(replicas: Replicas) -> None:
    started = time.monotonic()
    cfg = replicas.cfg
    prefix = cfg.topic_prefix
    db = await asyncpg.connect(cfg.database_url)
    async with httpx.AsyncClient(headers=replicas.headers, timeout=15) as http:
        program = await create_program(http, replicas.live[0].url, CODES)
        leader, leader_pid = await _leader(http, db, replicas.live)
        live = list(replicas.live)
        answered = 0
        done = asyncio.Event()
        pushed_at = time.monotonic()

        async def clicks(c: int) -> None:
            nonlocal answered
            i = c
            while not done.is_set():
                i += 1
                url = f"{live[i % len(live)].url}/r/{program.codes[c]}"
                try:
                    r = await http.get(url, headers={"user-agent": BROWSER})
                    answered += r.status_code == 302
                except httpx.HTTPError:
                    pass  # the killed replica; the next goes elsewhere
                await asyncio.sleep(PAUSE_S)

        async def kill_leader() -> None:
            await asyncio.sleep(BEFORE_KILL_S)
            live.remove(leader)
            leader.process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(leader.process.wait, 30)
            await asyncio.sleep(AFTER_KILL_S)
            done.set()

        await asyncio.gather(kill_leader(), *(clicks(c) for c in range(CLIENTS)))
        pushed = time.monotonic() - pushed_at
        new_leader, new_pid = await _leader(http, db, live)
        assert new_leader is not leader and new_pid != leader_pid

        async def drained() -> bool:
            return (
                await db.fetchval("SELECT count(*) FROM link.outbox WHERE published_at IS NULL")
                == 0
            )

        await eventually(drained, timeout=120)
        rows = await db.fetch("SELECT event_id, topic, key FROM link.outbox ORDER BY seq")
    await db.close()

    outbox: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        outbox[(row["topic"], row["key"])].append(row["event_id"])
    published: dict[tuple[str, str], list[str]] = defaultdict(list)
    for topic in sorted({row["topic"] for row in rows}):
        # read_to_end keeps each partition's offset order, and a key lives in one partition
        for record in await read_to_end(cfg.kafka_bootstrap_servers, prefix + topic):
            key = (topic, record.key.decode())
            published[key].append(json.loads(record.value)["id"])
    repeats = sum(len(ids) - len(set(ids)) for ids in published.values())
    out_of_order = [
        key for key, ids in outbox.items() if list(dict.fromkeys(published.get(key, []))) != ids
    ]
    in_outbox = {e for ids in outbox.values() for e in ids}
    on_topics = {e for ids in published.values() for e in ids}
    missing, foreign = in_outbox - on_topics, on_topics - in_outbox
    print(
        json.dumps(
            {
                "outbox_rows": len(rows),
                "keys": len(outbox),
                "redirects_answered": answered,
                "killed_leader_replica": leader.replica,
                "published_again": repeats,
                "missing": len(missing),
                "keys_out_of_order": len(out_of_order),
                "push_seconds": round(pushed, 1),
                "total_seconds": round(time.monotonic() - started, 1),
            }
        )
    )
    assert answered > 0 and len(rows) >= answered
    assert not missing, sorted(missing)[:5]
    assert not foreign, sorted(foreign)[:5]
    assert not out_of_order, out_of_order[:5]
    assert repeats <= BATCH_SIZE, repeats

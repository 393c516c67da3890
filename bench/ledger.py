"""Ledger transfers posted/s through reward-service's own code path, against raw inserts.

Runs on pgserver's embedded Postgres 16 (devstack), in a scratch database with reward-service's
migrations applied. Measured in the same run, with the same number of connections:

- reference: raw asyncpg single-row INSERTs (autocommit) into a table shaped like `transfers`
  (same columns, primary key and account indexes), i.e. what Postgres alone allows per row;
- posting: `repository.post_transfers` (accounts ensured, balance rows locked in order,
  transfers inserted, balances moved), one transaction per batch of BATCH transfers, each
  connection on its own holders (as partitions keyed by advocate give us);
- single: the same function with one transfer per transaction (a redemption's shape);
- release: 100,000 due rewards released by `handlers.release_due_rewards` (set-based, in
  batches of RELEASE_BATCH per transaction, outbox events included), then `verify` over it all.

Goal (issue #6): >= 2,000 transfers/s and >= 30% of the raw insert rate. The machine is shared
(2 cores: the client, Postgres and whatever else runs). Loops are bounded in count and time.
Usage: uv run --frozen python bench/ledger.py [--quick]   (DATABASE_URL reuses a running Postgres)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import cpu

QUICK = "--quick" in sys.argv
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "4"))
BATCH = 100
RAW_ROWS = 2_000 if QUICK else 30_000
POSTED = 3_000 if QUICK else 60_000
SINGLE = 300 if QUICK else 6_000
RELEASE = 3_000 if QUICK else 100_000
RELEASE_BATCH = 1_000
TIME_LIMIT_S = 60.0

RAW_TABLE = """
CREATE TABLE raw_transfers (
    id             uuid PRIMARY KEY,
    tenant_id      text NOT NULL,
    debit_account  uuid NOT NULL,
    credit_account uuid NOT NULL,
    amount         bigint NOT NULL CHECK (amount > 0),
    unit           text NOT NULL,
    cause          text NOT NULL,
    reward_id      text,
    leg            text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX raw_transfers_debit ON raw_transfers (debit_account) INCLUDE (amount);
CREATE INDEX raw_transfers_credit ON raw_transfers (credit_account) INCLUDE (amount);
"""


async def raw_inserts(dsn: str, total: int, meter: cpu.Meter) -> tuple[float, dict[str, float]]:
    """The raw rows/s, and the CPU per row (taken before the connections close: a backend's
    CPU is gone from /proc when it exits)."""
    import asyncpg

    conns = [
        await asyncpg.connect(dsn, server_settings={"search_path": "reward"})
        for _ in range(CONNECTIONS)
    ]
    await conns[0].execute(RAW_TABLE)
    per = total // CONNECTIONS
    deadline = time.perf_counter() + TIME_LIMIT_S
    done = 0

    async def worker(conn: Any) -> None:
        nonlocal done
        debit, credit = uuid.uuid4(), uuid.uuid4()
        for i in range(per):
            await conn.execute(
                """
                INSERT INTO raw_transfers (id, tenant_id, debit_account, credit_account, amount,
                                           unit, cause, reward_id, leg)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                """,
                uuid.uuid4(), "bench", debit, credit, 100, "USD", f"c{i}", None, "redeem",
            )  # fmt: skip
            done += 1
            if time.perf_counter() > deadline:
                return

    start = time.perf_counter()
    before = meter.snapshot()
    await asyncio.gather(*(worker(c) for c in conns))
    cost = cpu.per_op(before, meter.snapshot(), done)
    elapsed = time.perf_counter() - start
    for c in conns:
        await c.close()
    return done / elapsed, cost


def _transfers(tenant: str, worker: int, start: int, count: int) -> list[Any]:
    """Earn-shaped transfers (program liability -> an advocate's available), one program per
    worker and a spread of holders, with cause-derived ids like the service's."""
    from reward_service.ledger import domain as ledger

    out = []
    for i in range(start, start + count):
        liability = ledger.AccountRef(tenant, "program", f"prg_{worker}", "liability", "USD")
        holder = ledger.AccountRef(
            tenant, "advocate", f"adv_{worker}_{i % 500}", "available", "USD"
        )
        out.append(
            ledger.simple_transfer(tenant, f"bench:{worker}:{i}", "redeem", liability, holder, 100)
        )
    return out


async def posting(pool: Any, total: int, batch: int, tenant: str) -> float:
    from reward_service.ledger import repository

    per = total // CONNECTIONS
    deadline = time.perf_counter() + TIME_LIMIT_S
    done = 0

    async def worker(w: int) -> None:
        nonlocal done
        for start in range(0, per, batch):
            transfers = _transfers(tenant, w, start, min(batch, per - start))
            async with pool.acquire() as conn, conn.transaction():
                await repository.post_transfers(conn, transfers)
            done += len(transfers)
            if time.perf_counter() > deadline:
                return

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(CONNECTIONS)))
    return done / (time.perf_counter() - t0)


async def seed_due_rewards(pool: Any, count: int, due: datetime) -> float:
    """`count` pending rewards over 10,000 advocates, earned through the service's own posting
    (batched), their holds over by `due`. Returns the earn postings' rate."""
    from reward_service.earning import domain, postings
    from reward_service.ledger import repository
    from reward_service.rules import domain as rules
    from reward_service.rules import repository as rules_repository

    async with pool.acquire() as conn, conn.transaction():
        rule = await rules_repository.insert_rule_version(
            conn,
            rule_id="rrv_bench",
            tenant_id="rel",
            program_id="prg_rel",
            version=1,
            valid_from=due - timedelta(days=60),
            definition=rules.RuleDefinition(
                hold_days=30,
                rewards=(
                    rules.SideReward("advocate", "every_purchase", rules.Amount("USD", 2000)),
                ),
            ),
        )
    posted = 0
    t0 = time.perf_counter()
    for start in range(0, count, 5_000):
        rewards = [
            domain.Reward(
                id=f"rwd_bench_{i}",
                tenant_id="rel",
                program_id="prg_rel",
                rule_version_id=rule.id,
                role="advocate",
                holder_type="advocate",
                holder_id=f"adv_{i % 10_000}",
                advocate_id=f"adv_{i % 10_000}",
                conversion_id=f"cnv_{i}",
                referral_id=f"ref_{i}",
                kind="credit",
                amount=2000,
                unit="USD",
                state="pending",
                available_at=due - timedelta(seconds=i % 3600),
                requested_amount=2000,
                occurred_at=due - timedelta(days=30),
            )
            for i in range(start, min(count, start + 5_000))
        ]
        async with pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table(
                "rewards",
                records=[
                    (
                        r.id,
                        r.tenant_id,
                        r.program_id,
                        r.rule_version_id,
                        r.role,
                        r.holder_type,
                        r.holder_id,
                        r.advocate_id,
                        r.conversion_id,
                        r.referral_id,
                        r.kind,
                        r.amount,
                        r.unit,
                        r.state,
                        r.available_at,
                        "evt_bench",
                        r.requested_amount,
                        r.occurred_at,
                    )
                    for r in rewards
                ],
                columns=[
                    "id",
                    "tenant_id",
                    "program_id",
                    "rule_version_id",
                    "role",
                    "holder_type",
                    "holder_id",
                    "advocate_id",
                    "conversion_id",
                    "referral_id",
                    "kind",
                    "amount",
                    "unit",
                    "state",
                    "available_at",
                    "source_event_id",
                    "requested_amount",
                    "occurred_at",
                ],
            )
            await repository.post_transfers(conn, [postings.earn_transfer(r) for r in rewards])
        posted += len(rewards)
    return posted / (time.perf_counter() - t0)


async def release_all(pool: Any, now: datetime) -> tuple[int, float]:
    from reward_service.earning import handlers

    released = 0
    t0 = time.perf_counter()
    while True:
        async with pool.acquire() as conn, conn.transaction():
            n = await handlers.release_due_rewards(conn, now, RELEASE_BATCH)
        if n == 0:
            break
        released += n
        if time.perf_counter() - t0 > 10 * TIME_LIMIT_S:
            break
    return released, time.perf_counter() - t0


async def run(dsn: str) -> dict[str, Any]:
    from devstack.testing import migrate
    from reward_service.ledger import handlers
    from servicekit.db import create_pool

    await migrate(dsn, "reward", "reward_service")
    print(f"connections: {CONNECTIONS}, batch: {BATCH}")
    # issue #24: CPU per row / per transfer of Postgres and this process (the client: asyncpg,
    # and for posting the service's own code) together; the load average is quoted beside it
    # (the one-row reference suffers more from load than the batched posting)
    pg_dir = await cpu.postgres_dir(dsn)
    load_before = os.getloadavg()[0]
    raw, raw_cost = await raw_inserts(dsn, RAW_ROWS, cpu.Meter.stack(pg_dir, None))
    # posting runs the service's own code in this process: its CPU is reward-service's
    meter = cpu.Meter.stack(pg_dir, None, client_name="reward_service")
    print(f"reference: raw single-row inserts      {raw:>9,.0f} rows/s")
    pool = await create_pool(
        dsn, schema="reward", application_name="bench", min_size=1, max_size=CONNECTIONS + 1
    )
    try:
        before = meter.snapshot()
        batched = await posting(pool, POSTED, BATCH, "bench")
        posted = await pool.fetchval("SELECT count(*) FROM transfers WHERE tenant_id = 'bench'")
        posting_cost = cpu.per_op(before, meter.snapshot(), int(posted))
        print(f"post_transfers, {BATCH}/transaction       {batched:>9,.0f} transfers/s")
        single = await posting(pool, SINGLE, 1, "single")
        print(f"post_transfers, 1/transaction          {single:>9,.0f} transfers/s")
        now = datetime.now(UTC)
        earn_rate = await seed_due_rewards(pool, RELEASE, now)
        print(f"earn postings while seeding (5,000/tx) {earn_rate:>9,.0f} transfers/s")
        released, release_s = await release_all(pool, now)
        print(
            f"release {released:,} due rewards:       {release_s:>9.1f} s"
            f" ({released / release_s:,.0f} rewards/s, {RELEASE_BATCH}/transaction)"
        )
        t0 = time.perf_counter()
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            # the release tenant only: the posting runs' transfers have no cause on record
            # (no reward, redemption or payout), which verify rightly reports as orphans
            report = await handlers.verify(conn, "rel")
        verify_s = time.perf_counter() - t0
        transfers = await pool.fetchval("SELECT count(*) FROM transfers WHERE tenant_id = 'rel'")
        print(f"verify over {transfers:,} transfers:       {verify_s:>9.1f} s, ok={report.ok}")
    finally:
        await pool.close()
    return {
        "bench": "ledger",
        "transfers_per_s": round(batched),
        "reference_rows_per_s": round(raw),
        "ratio": round(batched / raw, 2),
        "single_transfer_tx_per_s": round(single),
        "single_ratio": round(single / raw, 2),
        "release_rewards": released,
        "release_s": round(release_s, 1),
        "verify_ok": report.ok,
        "verify_s": round(verify_s, 1),
        "connections": CONNECTIONS,
        "batch": BATCH,
        "quick": QUICK,
        **cpu.cost_fields(posting_cost, raw_cost),
        "load_avg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "machine": cpu.machine(),
    }


async def main() -> None:
    from devstack.postgres import create_scratch_database, start_embedded

    existing = os.environ.get("DATABASE_URL")
    if existing:
        result = await run(await create_scratch_database(existing))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-ledger-") as root:
            server, admin = start_embedded(Path(root) / "pg")
            try:
                result = await run(await create_scratch_database(admin))
            finally:
                server.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())

"""Growth analytics (issue #22): events folded per second into the read models while the funnel
query answers, and the leaderboard's p99 at 100,000 advocates, each beside a same-run reference.

Runs on pgserver's embedded Postgres 16 (devstack), in a scratch database with
attribution-service's migrations applied. Measured in the same run, with the same connections:

- fold: link.clicked (90 %), referral.attributed, conversion.attributed and reward events, each
  in its own transaction where the service folds it (clicks and reward events with their inbox
  row through the consumers' routing tables, this service's own events as the folding worker
  folds them: without Kafka), while one more connection asks for the funnel (30 days by day)
  in a loop;
- fold reference: the same transactions with plain INSERTs of an inbox row and a counter row
  (what any consumer that records an event and one figure must write);
- leaderboard: 100,000 advocates' scores in the index (skewed: most have 0-3 referrals, so
  ties are large), then one advocate's rank (random advocates, most far outside the top) and
  the top 10, each one transaction as the route runs it;
- leaderboard reference: a bare SELECT of one index row by primary key.

Goal (issue #22): leaderboard p99 under 20 ms at 100,000 advocates. The machine is shared.
Usage: uv run --frozen python bench/analytics.py [--quick]
(DATABASE_URL reuses a running Postgres)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import cpu

QUICK = "--quick" in sys.argv
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "4"))
EVENTS = 2_000 if QUICK else 40_000
ADVOCATES = 20_000 if QUICK else 100_000
RANK_QUERIES = 200 if QUICK else 3_000
TIME_LIMIT_S = 60.0
PROGRAM, TENANT = "prg_bench", "bench"
BOARD = "prg_board"  # the leaderboard's own program, apart from the folded one
START = datetime(2026, 11, 1, tzinfo=UTC)


def _events(count: int) -> list[Any]:
    """(CloudEvent, payload) pairs: mostly clicks, the rest the later steps of a referral."""
    from referral_events import new_event
    from referral_events.contracts import attribution as at
    from referral_events.contracts import link as ev
    from referral_events.contracts import reward as rw

    rnd = random.Random(1)
    out: list[Any] = []
    for i in range(count):
        adv = f"adv_{rnd.randrange(5_000)}"
        when = START + timedelta(minutes=rnd.randrange(30 * 24 * 60))
        kind = i % 20
        payload: Any
        if kind < 18:
            payload = ev.LinkClicked(
                click_id=f"clk_{i}", code="X", advocate_id=adv, program_id=PROGRAM,
                clicked_at=when, channel=rnd.choice(["email", "sms", "whatsapp", "copy"]),
                ip_hash=f"ip_{rnd.randrange(count)}", is_bot=rnd.random() < 0.05,
            )  # fmt: skip
        elif kind == 18:
            payload = at.ReferralAttributed(
                referral_id=f"ref_{i}", program_id=PROGRAM, advocate_id=adv,
                friend_customer_id=f"cus_{i}", conversion_id=f"cnv_{i}", evidence="click",
                attributed_at=when,
            )  # fmt: skip
        elif i % 40 == 19:
            payload = at.ConversionAttributed(
                conversion_id=f"cnv_{i}", referral_id=f"ref_{i - 1}", program_id=PROGRAM,
                advocate_id=adv, friend_customer_id=f"cus_{i - 1}", conversion_type="purchase",
                order_id=f"o_{i}", amount_minor=5990, currency="USD", is_first_purchase=True,
                occurred_at=when, evidence="click",
            )  # fmt: skip
        else:
            payload = rw.RewardAvailable(
                reward_id=f"rwd_{i}", program_id=PROGRAM, advocate_id=adv, holder_id=adv,
                role="advocate", conversion_id=f"cnv_{i}", kind="credit", amount=2000, unit="USD",
            )  # fmt: skip
        out.append((new_event(payload, source="/bench", tenant_id=TENANT, time=when), payload))
    return out


# Mirrors referral_events.inbox.InboxConsumer._apply's inbox row (the bench has no Kafka record).
INBOX_INSERT = """
    INSERT INTO inbox (consumer, event_id, event_type, topic, kafka_partition, kafka_offset)
    VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT DO NOTHING RETURNING true
"""


async def _spread(pool: Any, items: list[Any], one: Any) -> tuple[float, int]:
    """Items split over CONNECTIONS workers; items per second, and how many were done."""
    parts = [items[w::CONNECTIONS] for w in range(CONNECTIONS)]
    deadline = time.perf_counter() + TIME_LIMIT_S
    done = 0

    async def worker(part: list[Any]) -> None:
        nonlocal done
        for k, item in enumerate(part):
            if time.perf_counter() > deadline:
                return
            await one(item, k)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(p) for p in parts))
    return done / (time.perf_counter() - t0), done


async def fold(pool: Any, events: list[Any]) -> tuple[float, int, list[float]]:
    """Events folded per second, how many, and the funnel query's latencies (ms) meanwhile."""
    from attribution_service.analytics import handlers as analytics
    from attribution_service.analytics.domain import Range
    from attribution_service.consumers import CONSUMERS

    # Each event where the service folds it: link events in the attribution-service group's
    # handler (its own copy and analytics', one inbox row), reward events in the
    # attribution-service-analytics group, this service's own events as the folding worker does.
    group_of = {t: c for c in CONSUMERS for t in c.handlers}
    stop = asyncio.Event()
    latencies: list[float] = []

    async def one(item: Any, k: int) -> None:
        event, payload = item
        async with pool.acquire() as conn, conn.transaction():
            spec = group_of.get(event.type)
            if spec is None:  # as the worker folds it (analytics.handlers.fold_outboxed)
                await analytics.fold_events(conn, [event])
            elif await conn.fetchval(INBOX_INSERT, spec.group, event.id, event.type, "t", k):
                await spec.handlers[event.type](conn, event, payload)

    async def funnel() -> None:
        r = Range(date(2026, 11, 1), date(2026, 11, 30), "day")
        while not stop.is_set():
            t0 = time.perf_counter()
            async with pool.acquire() as conn, conn.transaction():
                await analytics.funnel(conn, TENANT, PROGRAM, r, None)
            latencies.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.05)

    reader = asyncio.create_task(funnel())
    rate, done = await _spread(pool, events, one)
    stop.set()
    await reader
    return rate, done, latencies


async def fold_reference(pool: Any, events: list[Any]) -> tuple[float, int]:
    await pool.execute(
        """
        CREATE TABLE raw_counters (tenant_id text, program_id text, day date, channel text,
                                   metric text, unit text, value bigint);
        """
    )

    async def one(item: Any, k: int) -> None:
        event, _ = item
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetchval(INBOX_INSERT, "raw", event.id, event.type, "t", k)
            await conn.execute(
                "INSERT INTO raw_counters VALUES ($1, $2, $3, '', 'clicks', '', 1)",
                TENANT,
                PROGRAM,
                event.time.date(),
            )

    return await _spread(pool, events, one)


async def seed_leaderboard(pool: Any) -> list[str]:
    from attribution_service.analytics.domain import TIE_BLOCK_CHARS
    from servicekit.ids import new_id

    rnd = random.Random(2)
    ids = [new_id("adv") for _ in range(ADVOCATES)]
    # Skewed like a real program: most advocates refer 0-3 friends, a few very many.
    scores = [int(rnd.paretovariate(1.5)) - 1 for _ in ids]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "analytics_leaderboard",
            records=[(BOARD, "referrals", "all", a, s) for a, s in zip(ids, scores, strict=True)],
            columns=["program_id", "metric", "period", "advocate_id", "score"],
        )
        await conn.copy_records_to_table(
            "analytics_advocates",
            records=[(a, TENANT, BOARD, "Ann S.") for a in ids],
            columns=["advocate_id", "tenant_id", "program_id", "display_name"],
        )
        # the counts per score and per score and block, as the folds keep them
        await conn.execute(
            """
            INSERT INTO analytics_leaderboard_counts
                (program_id, metric, period, score, block, advocates)
            SELECT program_id, metric, period, score, '', count(*)
            FROM analytics_leaderboard WHERE program_id = $2 GROUP BY 1, 2, 3, 4
            UNION ALL
            SELECT program_id, metric, period, score, left(advocate_id, $1), count(*)
            FROM analytics_leaderboard WHERE program_id = $2 GROUP BY 1, 2, 3, 4, 5
            """,
            TIE_BLOCK_CHARS,
            BOARD,
        )
        await conn.execute(
            "VACUUM ANALYZE analytics_leaderboard, analytics_leaderboard_counts,"
            " analytics_advocates"
        )
    return ids


def _p(latencies: list[float], q: float) -> float:
    s = sorted(latencies)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


async def timed(pool: Any, count: int, call: Any) -> list[float]:
    out: list[float] = []
    for k in range(count):
        t0 = time.perf_counter()
        async with pool.acquire() as conn, conn.transaction():
            await call(conn, k)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def run(dsn: str) -> dict[str, Any]:
    from attribution_service.analytics import handlers as analytics
    from devstack.testing import migrate
    from servicekit.db import create_pool

    await migrate(dsn, "attribution", "attribution_service")
    pool = await create_pool(
        dsn, schema="attribution", application_name="bench", min_size=1,
        max_size=CONNECTIONS + 2,
    )  # fmt: skip
    try:
        await pool.execute(
            "INSERT INTO analytics_programs (program_id, tenant_id) VALUES ($1, $2), ($3, $2)",
            PROGRAM,
            TENANT,
            BOARD,
        )
        events = _events(EVENTS)
        # CPU per event of this process (which folds) and of the Postgres backends
        meter = cpu.Meter.stack(await cpu.postgres_dir(dsn), None, client_name="bench_process")
        before = meter.snapshot()
        raw, raw_n = await fold_reference(pool, events)
        raw_cost = cpu.per_op(before, meter.snapshot(), raw_n)
        print(f"reference: inbox row + counter INSERT  {raw:>9,.0f} events/s")
        before = meter.snapshot()
        folded, folded_n, funnel_ms = await fold(pool, events)
        fold_cost = cpu.per_op(before, meter.snapshot(), folded_n)
        print(
            f"fold through the analytics handlers    {folded:>9,.0f} events/s"
            f" (funnel p50 {_p(funnel_ms, 0.5):.1f} ms, p99 {_p(funnel_ms, 0.99):.1f} ms,"
            f" {len(funnel_ms)} queries meanwhile)"
        )
        ids = await seed_leaderboard(pool)
        rnd = random.Random(3)
        picks = [rnd.choice(ids) for _ in range(RANK_QUERIES)]

        async def bare(conn: Any, k: int) -> None:
            await conn.fetchrow(
                "SELECT * FROM analytics_leaderboard WHERE program_id = $1 AND metric = $2"
                " AND period = $3 AND advocate_id = $4",
                BOARD,
                "referrals",
                "all",
                picks[k],
            )

        async def rank(conn: Any, k: int) -> None:
            await analytics.advocate_rank(conn, TENANT, BOARD, picks[k], "referrals", None, "all")

        async def top(conn: Any, k: int) -> None:
            await analytics.leaderboard(conn, TENANT, BOARD, "referrals", None, "all", 10)

        ref_ms = await timed(pool, RANK_QUERIES, bare)
        rank_ms = await timed(pool, RANK_QUERIES, rank)
        top_ms = await timed(pool, RANK_QUERIES, top)
        for label, ms in [
            ("reference: SELECT by primary key", ref_ms),
            (f"one advocate's rank of {ADVOCATES:,}", rank_ms),
            ("top 10", top_ms),
        ]:
            print(f"{label:<38} p50 {_p(ms, 0.5):6.2f} ms  p99 {_p(ms, 0.99):6.2f} ms")
    finally:
        await pool.close()
    return {
        "bench": "analytics",
        "fold_events_per_s": round(folded),
        "reference_events_per_s": round(raw),
        "fold_ratio": round(folded / raw, 2),
        "cpu_ms_per_op": fold_cost["total"],
        "reference_cpu_ms_per_op": raw_cost["total"],
        "cpu_ratio": round(fold_cost["total"] / raw_cost["total"], 2)
        if raw_cost["total"]
        else None,
        "cpu_ms_per_op_by_process": fold_cost,
        "funnel_p50_ms": round(_p(funnel_ms, 0.5), 2),
        "funnel_p99_ms": round(_p(funnel_ms, 0.99), 2),
        "funnel_queries": len(funnel_ms),
        "advocates": ADVOCATES,
        "rank_p50_ms": round(_p(rank_ms, 0.5), 2),
        "rank_p99_ms": round(_p(rank_ms, 0.99), 2),
        "top10_p99_ms": round(_p(top_ms, 0.99), 2),
        "reference_pk_p50_ms": round(_p(ref_ms, 0.5), 2),
        "reference_pk_p99_ms": round(_p(ref_ms, 0.99), 2),
        "events": len(events),
        "connections": CONNECTIONS,
        "quick": QUICK,
    }


async def main() -> None:
    from devstack.postgres import create_scratch_database, start_embedded

    existing = os.environ.get("DATABASE_URL")
    if existing:
        result = await run(await create_scratch_database(existing))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-analytics-") as root:
            server, admin = start_embedded(Path(root) / "pg")
            try:
                result = await run(await create_scratch_database(admin))
            finally:
                server.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())

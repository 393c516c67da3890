"""Webhook delivery throughput and the isolation of slow endpoints.

Runs notification-service's real dispatcher (Postgres claims, signed POSTs, attempt records and
delivery.* events through the outbox to a real Kafka) against a receiver on 127.0.0.1 in a
separate process, and measures in the same run:

- reference: the raw httpx POST rate to the same receiver (same body, same connection layout
  and concurrency as the dispatcher: a pool of 4 per endpoint), i.e. what the HTTP path alone
  allows on this machine, so the ratio is the dispatcher's own cost (claims, signing, records,
  events);
- throughput: deliveries/s draining a backlog spread over healthy endpoints, and the same with
  10 % of the endpoints hanging (never answering until the attempt times out);
- lag: at a steady offered load, the p99 time from a delivery being queued to it being
  delivered, for healthy endpoints, without and with 10 % of endpoints hanging.

Goals (issue #8): >= 500 deliveries/s, and healthy endpoints' p99 lag within 20 % when 10 % of
endpoints hang. Loops are bounded in count and time; all load goes to 127.0.0.1.
Usage: uv run --frozen python bench/webhooks.py [--quick]   (KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL
reuse a running broker / Postgres)
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from _common import cpu

BODY_DATA = {"reward_id": "rwd_bench", "amount": 2000, "unit": "USD", "advocate_id": "adv_1"}
ENDPOINTS = 20
HANGING = 2  # 10 % of ENDPOINTS
TIMEOUT_SECONDS = 2.0  # the attempt timeout in this bench (production: 15 s)


# --- the receiver, in its own process ---------------------------------------------------------


def _receiver(port: int) -> None:
    """A minimal HTTP/1.1 keep-alive server on asyncio streams: far cheaper per request than an
    ASGI stack, so on a shared machine the receiver is not what the bench measures. Paths
    under /hang/ never answer."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:].strip())
                if length:
                    await reader.readexactly(length)
                if head.split(b" ", 2)[1].startswith(b"/hang/"):
                    await asyncio.sleep(3600)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


async def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("receiver did not start")


# --- reference: raw httpx ---------------------------------------------------------------------


async def reference_rate(base: str, total: int, per_endpoint: int) -> float:
    """`total` POSTs with the dispatcher's connection layout (one small pool per endpoint,
    `per_endpoint` requests in flight to each), and nothing else: no database, no signing."""
    body = json.dumps({"type": "reward.available.v1", "data": BODY_DATA}).encode()
    limits = httpx.Limits(max_connections=per_endpoint, max_keepalive_connections=per_endpoint)
    clients = [httpx.AsyncClient(limits=limits, timeout=10) for _ in range(ENDPOINTS)]
    left = total

    async def worker(i: int) -> None:
        nonlocal left
        client = clients[i % ENDPOINTS]
        while left > 0:
            left -= 1
            r = await client.post(f"{base}/ok/{i % ENDPOINTS}", content=body)
            r.raise_for_status()

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(ENDPOINTS * per_endpoint)))
        return total / (time.perf_counter() - started)
    finally:
        for client in clients:
            await client.aclose()


# --- the dispatcher under test ----------------------------------------------------------------


async def setup_endpoints(conn: asyncpg.Connection, base: str, hanging: int) -> list[str]:
    from notification_service.webhooks import domain

    ids: list[str] = []
    for i in range(ENDPOINTS):
        path = f"/hang/{i}" if i < hanging else f"/ok/{i}"
        endpoint_id = f"ep_bench_{hanging}_{i}"
        await conn.execute(
            "INSERT INTO webhook_endpoints (id, tenant_id, url) VALUES ($1, 'bench', $2)",
            endpoint_id,
            base + path,
        )
        await conn.execute(
            "INSERT INTO webhook_endpoint_secrets (endpoint_id, secret) VALUES ($1, $2)",
            endpoint_id,
            domain.new_secret(),
        )
        ids.append(endpoint_id)
    return ids


async def enqueue(
    conn: asyncpg.Connection, endpoints: list[str], count: int, tag: str, offset: int = 0
) -> None:
    """`count` messages, each to one endpoint, round robin: what the consumer's fan-out
    writes (rows, then the NOTIFY that wakes the dispatchers), written directly so the bench
    measures delivery alone."""
    from notification_service.webhooks import domain, repository

    now = datetime.now(UTC)
    body = domain.render_body("reward.available.v1", now, BODY_DATA, "bench")
    messages = [(f"msg_{tag}_{i}", "bench", "reward.available.v1", now, body) for i in range(count)]
    await conn.executemany(
        "INSERT INTO webhook_messages (id, tenant_id, event_type, event_time, body) "
        "VALUES ($1, $2, $3, $4, $5)",
        messages,
    )
    await conn.executemany(
        "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, message_id, next_attempt_at)"
        " VALUES ($1, 'bench', $2, $3, clock_timestamp())",
        [
            (f"dlv_{tag}_{i}", endpoints[(offset + i) % len(endpoints)], m[0])
            for i, m in enumerate(messages)
        ],
    )
    await repository.notify_deliveries_due(conn)


async def lags(conn: asyncpg.Connection, tag: str, healthy: list[str]) -> list[float]:
    rows = await conn.fetch(
        """
        SELECT extract(epoch FROM delivered_at - created_at) AS lag FROM webhook_deliveries
        WHERE id LIKE $1 AND status = 'delivered' AND endpoint_id = ANY($2::text[])
        """,
        f"dlv_{tag}_%",
        healthy,
    )
    return sorted(float(r["lag"]) for r in rows)


def note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * 0.99))]


async def delivered_count(conn: asyncpg.Connection, tag: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE id LIKE $1 AND status = 'delivered'",
            f"dlv_{tag}_%",
        )
    )


async def drain(conn: asyncpg.Connection, tag: str, target: int, limit_s: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if await delivered_count(conn, tag) >= target:
            break
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def run(quick: bool) -> dict[str, Any]:
    from devstack.kafka import KafkaBroker
    from devstack.paths import free_port
    from devstack.postgres import create_scratch_database, start_embedded
    from devstack.testing import migrate
    from notification_service.config import Settings
    from notification_service.main import SPEC
    from notification_service.webhooks.dispatcher import Dispatcher
    from servicekit import db
    from servicekit.runtime import Runtime

    # the bench writes what the consumer's fan-out writes, for the tenant its rows name: it
    # acts across tenants as the consumers do (the pool connects as the app role, under RLS)
    db.act_for_all_tenants()

    backlog = 400 if quick else 4000
    seconds = 2 if quick else 12
    rate = 0.0  # offered load of the lag phases: half the throughput measured first

    root = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    # a running broker / Postgres when handed one (bench/run_all.py does), else our own
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = pg = None
    if not bootstrap:
        note("starting Kafka")
        broker = KafkaBroker(root / "kafka", heap="512m")
        broker.start()
        bootstrap = broker.bootstrap_servers
    admin = os.environ.get("DATABASE_URL")
    if not admin:
        note("starting Postgres")
        pg, admin = start_embedded(root / "pg")
    note("started")
    port = free_port()
    receiver = multiprocessing.get_context("spawn").Process(target=_receiver, args=(port,))
    receiver.start()
    figures: dict[str, Any] = {}
    try:
        await _wait_listening(port)
        base = f"http://127.0.0.1:{port}"
        settings_base = dict(
            kafka_bootstrap_servers=bootstrap,
            kafka_topic_partitions=2,
            webhook_allow_http=True,
            webhook_allow_private_networks=True,
            webhook_timeout_seconds=TIMEOUT_SECONDS,
            db_pool_max_size=20,
            run_consumers=False,
            log_level="WARNING",
        )
        per_endpoint = Settings().webhook_per_endpoint_concurrency
        # issue #24: the CPU per POST of the receiver and this process (httpx) together
        reference_meter = cpu.Meter.of(receiver=receiver.pid)
        before = reference_meter.snapshot()
        figures["reference_rps"] = round(await reference_rate(base, backlog, per_endpoint), 1)
        reference_cost = cpu.per_op(before, reference_meter.snapshot(), backlog)
        pg_dir = await cpu.postgres_dir(admin)
        note(f"reference {figures['reference_rps']}/s")

        for hanging in (0, HANGING):
            dsn = await create_scratch_database(admin)
            await migrate(dsn, "notification", "notification_service")
            settings = Settings(
                database_url=dsn,
                kafka_topic_prefix=f"b{hanging}{os.getpid()}.",
                **settings_base,
            )
            spec = replace(SPEC, consumers=[], workers=lambda rt: [Dispatcher(rt, rt.settings)])  # type: ignore[arg-type]
            rt = Runtime(spec, settings)
            await rt.start()
            try:
                async with rt.pool.acquire() as conn:
                    endpoints = await setup_endpoints(conn, base, hanging)
                    healthy = endpoints[hanging:]
                    # throughput: a backlog, healthy endpoints only receive it
                    if hanging:
                        # the hanging endpoints hold attempts of their own meanwhile
                        await enqueue(conn, endpoints[:hanging], backlog // 10, f"tph{hanging}")
                    started_at = datetime.now(UTC)
                    # every process while the backlog drains: notification-service's
                    # dispatcher (run in this process: claims, signing, records, events), the
                    # receiver, Postgres, Kafka
                    meter = cpu.Meter.stack(
                        pg_dir,
                        bootstrap,
                        client_name="notification_service",
                        receiver=receiver.pid,
                    )
                    before = meter.snapshot()
                    await enqueue(conn, healthy, backlog, f"tp{hanging}")
                    note(f"draining {backlog} ({hanging} hanging)")
                    took = await drain(conn, f"tp{hanging}", backlog, 120)
                    done = await delivered_count(conn, f"tp{hanging}")
                    if not hanging:
                        figures.update(
                            cpu.cost_fields(
                                cpu.per_op(before, meter.snapshot(), done), reference_cost
                            )
                        )
                    last = await conn.fetchval(
                        "SELECT max(delivered_at) FROM webhook_deliveries WHERE id LIKE $1",
                        f"dlv_tp{hanging}_%",
                    )
                    span = max((last - started_at).total_seconds(), 0.001) if last else took
                    note(f"{done} delivered in {span:.1f}s")
                    figures[f"deliveries_per_s_{'hang' if hanging else 'healthy'}"] = round(
                        done / span, 1
                    )
                    if not rate:
                        rate = max(10.0, figures["deliveries_per_s_healthy"] / 2)
                        figures["offered_rate_lag_phases"] = round(rate, 1)
                    # lag at a steady offered load, every endpoint (hanging ones too) in turn
                    tag = f"lag{hanging}"
                    step = 0.1
                    per_step = max(1, int(rate * step))
                    sent = 0
                    started = time.perf_counter()
                    while time.perf_counter() - started < seconds:
                        await enqueue(conn, endpoints, per_step, f"{tag}_{sent}", sent)
                        sent += per_step
                        await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
                    healthy_sent = sent * len(healthy) // len(endpoints)
                    note(f"offered {sent} at {rate}/s; waiting for the healthy ones")
                    await asyncio.sleep(1.0)
                    deadline = time.perf_counter() + 30
                    while time.perf_counter() < deadline:
                        got = await conn.fetchval(
                            """
                            SELECT count(*) FROM webhook_deliveries
                            WHERE id LIKE $1 AND status = 'delivered'
                              AND endpoint_id = ANY($2::text[])
                            """,
                            f"dlv_{tag}_%",
                            healthy,
                        )
                        if int(got) >= healthy_sent:
                            break
                        await asyncio.sleep(0.1)
                    values = await lags(conn, f"{tag}_%", healthy)
                    name = "hang" if hanging else "healthy"
                    figures[f"p99_lag_ms_{name}"] = round(p99(values) * 1000, 1)
                    figures[f"p50_lag_ms_{name}"] = (
                        round(values[len(values) // 2] * 1000, 1) if values else None
                    )
                    figures[f"lag_samples_{name}"] = len(values)
            finally:
                await rt.stop()
    finally:
        # SIGKILL: uvicorn would wait for the hanging requests' connections to close first
        receiver.kill()
        receiver.join(10)
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)

    figures["ratio"] = round(figures["deliveries_per_s_healthy"] / figures["reference_rps"], 2)
    figures["p99_lag_ratio_hang"] = round(
        figures["p99_lag_ms_hang"] / max(figures["p99_lag_ms_healthy"], 0.001), 2
    )
    figures["goal_rps_met"] = figures["deliveries_per_s_healthy"] >= 500
    figures["goal_isolation_met"] = figures["p99_lag_ratio_hang"] <= 1.2
    figures["quick"] = quick
    figures["machine"] = cpu.machine()
    return figures


def main() -> None:
    quick = "--quick" in sys.argv
    os.environ.setdefault("OTEL_SDK_DISABLED", "true")
    figures = asyncio.run(run(quick))
    print(
        f"reference (raw httpx POST): {figures['reference_rps']}/s\n"
        f"dispatcher, healthy endpoints: {figures['deliveries_per_s_healthy']} deliveries/s "
        f"(ratio to reference {figures['ratio']})\n"
        f"dispatcher, {HANGING} of {ENDPOINTS} endpoints hanging: "
        f"{figures['deliveries_per_s_hang']} deliveries/s to the healthy ones\n"
        f"healthy p99 lag: {figures['p99_lag_ms_healthy']} ms without hangs, "
        f"{figures['p99_lag_ms_hang']} ms with (x{figures['p99_lag_ratio_hang']})"
    )
    print(json.dumps({"bench": "webhooks", **figures}))


if __name__ == "__main__":
    main()

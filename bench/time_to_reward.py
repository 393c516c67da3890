"""Time to reward (issue #24): purchases at a steady rate through all four services, each a
process, to the advocate's reward visible in the ledger and the signed webhook received.

Starts Kafka and Postgres (devstack; KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL reuse running ones)
and the four services as processes (`<service> serve`), with one tenant per advocate: its
program, a first-purchase reward rule (20.00 USD), the attribution checks that a bench's
loopback traffic trips switched off (too fast, velocity, self-referral), and a webhook
endpoint subscribed to `reward.available.v1` on a receiver in a process of its own, which
checks every signature (Standard Webhooks). Before the measured phase every friend clicks the
advocate's link (a browser's User-Agent) and signs up with the click id, until attributed.

Measured: purchases (`POST /v1/conversions`, type purchase, one per friend) scheduled at
`--rate` per second for `--duration` seconds (open loop, httpx); for each, from the purchase
call's answer to
- the reward visible in the balance: its advocate reward row `available` in reward-service's
  database (the same transaction moves the ledger balance), polled every 10 ms while fewer
  than `POLL_LOOKUPS_PER_S` / 100 purchases wait, less often beyond (see `poll_interval`);
- the signed webhook received by the endpoint.
p50/p99 of both. The CPU of every process (four services, Postgres, Kafka, receiver, this
client) per purchase until the last reward's webhook, beside a bare ASGI app's
(bench/_common/bare201.py) answering the same POSTs from the same client at the same rate.

Goal (issue #24): p99 under 250 ms to the balance and under 500 ms to the webhook at half of
the conversions bench's saturation (pass it as --rate). Usage:
uv run --frozen python bench/time_to_reward.py [--quick] [--rate 200] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
from _common import cpu

HERE = Path(__file__).resolve().parent
BROWSER_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15"
FRAUD_OFF = {
    "fraud": {
        "too_fast": {"enabled": False},
        "velocity": {"enabled": False},
        "self_referral": {"enabled": False},
    }
}


def _receiver(port: int, endpoint_secrets: dict[str, str], out: Any) -> None:
    """A minimal HTTP/1.1 keep-alive server: each POST to /hooks/<tenant> is checked against
    that endpoint's secret, then (conversion id, wall time received, signature ok) goes to
    `out`."""
    from standardwebhooks.webhooks import Webhook

    hooks = {t: Webhook(s) for t, s in endpoint_secrets.items()}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                received = time.time()
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                tenant = lines[0].split(" ")[1].rsplit("/", 1)[-1]
                ok = True
                try:
                    hooks[tenant].verify(
                        body,
                        {
                            k: headers[k]
                            for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
                        },
                    )
                except Exception:  # any failure is a bad signature here
                    ok = False
                data = json.loads(body).get("data", {})
                out.put((data.get("conversion_id"), received, ok))
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
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


# The balance watcher looks up every purchase still waiting on each poll. At a fixed 10 ms a
# backlog of thousands (a rate the stack cannot keep up with) made it the biggest Postgres load
# of the run, counted per purchase and slowing the pipeline it measures. Bounding its lookups
# per second bounds that cost; the poll interval then grows with the backlog, and with it the
# error of a reading: at most interval = waiting / POLL_LOOKUPS_PER_S, while the waiting
# purchases' age is about waiting / rate, so the error stays under rate / POLL_LOOKUPS_PER_S of
# the latency read (2 % at 200/s).
POLL_LOOKUPS_PER_S = 10_000
POLL_MIN_S = 0.01


def poll_interval(waiting: int) -> float:
    return max(POLL_MIN_S, waiting / POLL_LOOKUPS_PER_S)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


async def steady(rate: float, count: int, send: Any) -> None:
    """`send(i)` for i in range(count), the i-th scheduled at start + i / rate (open loop)."""
    start = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    await asyncio.gather(*tasks)


async def bare_reference(rate: float, count: int) -> dict[str, float]:
    """The bare ASGI app answering the same POSTs from the same client at the same rate."""
    from devstack.paths import free_port

    port = free_port()
    proc = subprocess.Popen(  # noqa: S603, ASYNC220
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(HERE / "_common"),
            "bare201:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "off",
        ]
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    await http.post("/v1/conversions", json={})
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            meter = cpu.Meter.of(bare_app=proc.pid)
            before = meter.snapshot()

            async def send(i: int) -> None:
                await http.post(
                    "/v1/conversions",
                    json=purchase_body(i),
                    headers={"Idempotency-Key": f"ord_{i}"},
                )

            await steady(rate, count, send)
            per_op: dict[str, float] = cpu.per_op(before, meter.snapshot(), count)
            return per_op
    finally:
        proc.terminate()
        proc.wait(10)


async def settle(database_url: str, quiet_for: float = 2.0, limit: float = 300.0) -> float:
    """Wait until the set-up's events have gone all the way through: every service's outbox
    published and no consumer taking anything in (the inboxes unchanged) for `quiet_for`
    seconds, so the measured purchases do not queue behind the sign-ups' emails, portal rows
    and webhooks, nor pay for them. Returns the seconds waited."""
    import asyncpg

    from devstack.services import SERVICES

    started = time.monotonic()
    # the services' own schema names only
    schemas = [d.schema for d in SERVICES]
    counts = " + ".join(f"(SELECT count(*) FROM {s}.inbox)" for s in schemas)  # noqa: S608
    unpublished = " + ".join(
        f"(SELECT count(*) FROM {s}.outbox WHERE published_at IS NULL)"  # noqa: S608
        for s in schemas
    )
    conn = await asyncpg.connect(database_url)
    try:
        last, quiet_since = None, time.monotonic()
        while time.monotonic() - started < limit:
            now = await conn.fetchrow(f"SELECT {counts} AS taken, {unpublished} AS waiting")
            if now != last or now["waiting"]:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_for:
                break
            await asyncio.sleep(0.25)
    finally:
        await conn.close()
    return time.monotonic() - started


def purchase_body(i: int) -> dict[str, Any]:
    return {
        "type": "purchase",
        "customer_id": f"cus_friend_{i}",
        "order_id": f"ord_{i}",
        "amount": "59.90",
        "currency": "USD",
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from devstack import services
    from devstack.kafka import KafkaBroker
    from devstack.paths import free_port
    from devstack.postgres import create_database, start_embedded

    purchases = int(args.rate * args.duration)
    state = Path(tempfile.mkdtemp(prefix="bench-ttr-"))
    broker = pg = None
    running: list[Any] = []
    receiver = None
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = KafkaBroker(state / "kafka", heap="512m")
            broker.start()
            bootstrap = broker.bootstrap_servers
        admin_dsn = os.environ.get("DATABASE_URL")
        if not admin_dsn:
            pg, admin_dsn = start_embedded(state / "pg")
        database_url = await create_database(admin_dsn, f"bench_{secrets.token_hex(4)}")
        keys = {f"t{t}": "rk_bench_" + secrets.token_urlsafe(16) for t in range(args.tenants)}
        cfg = services.StackConfig(
            database_url=database_url,
            kafka_bootstrap_servers=bootstrap,
            api_keys=[
                {"tenant_id": t, "key_sha256": hashlib.sha256(k.encode()).hexdigest()}
                for t, k in keys.items()
            ],
            topic_prefix=f"ttr{secrets.token_hex(3)}.",
            fixed_ports=False,
            log_dir=state / "logs",
            extra_env={"LOG_LEVEL": "WARNING", "OUTBOX_POLL_INTERVAL_SECONDS": "0.2"},
        )
        await asyncio.gather(
            *(asyncio.to_thread(services.migrate, cfg, (d,)) for d in services.SERVICES)
        )
        running = services.start(cfg)
        await asyncio.to_thread(services.wait_ready, running, 180)
        url = {s.definition.name: s.url for s in running}
        receiver_port = free_port()

        # per tenant: program, rule, checks off, webhook endpoint, one advocate
        codes: dict[str, str] = {}
        endpoint_secrets: dict[str, str] = {}
        for tenant, key in keys.items():
            async with httpx.AsyncClient(
                headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as http:
                r = await http.post(
                    f"{url['link-service']}/v1/programs",
                    json={"name": "Give 20", "landing_url": "https://shop.example.com/join"},
                )
                r.raise_for_status()
                program = r.json()["id"]
                for r in (
                    await http.put(
                        f"{url['reward-service']}/v1/programs/{program}/reward-rule",
                        json={
                            "advocate_reward": {"amount_minor": 2000, "currency": "USD"},
                            "trigger": "first_purchase",
                        },
                    ),
                    await http.put(
                        f"{url['attribution-service']}/v1/programs/{program}/attribution-settings",
                        json=FRAUD_OFF,
                    ),
                ):
                    r.raise_for_status()
                r = await http.post(
                    f"{url['notification-service']}/v1/webhook-endpoints",
                    json={
                        "url": f"http://127.0.0.1:{receiver_port}/hooks/{tenant}",
                        "event_types": ["reward.available.v1"],
                    },
                )
                r.raise_for_status()
                endpoint_secrets[tenant] = r.json()["secret"]
                r = await http.post(
                    f"{url['link-service']}/v1/programs/{program}/advocates",
                    json={"customer_id": f"cus_adv_{tenant}"},
                )
                r.raise_for_status()
                codes[tenant] = r.json()["code"]

        queue: Any = multiprocessing.get_context("spawn").Queue()
        receiver = multiprocessing.get_context("spawn").Process(
            target=_receiver, args=(receiver_port, endpoint_secrets, queue)
        )
        receiver.start()

        # every friend clicks and signs up (friend i refers to tenant i % tenants)
        tenants = list(keys)
        clients = {
            t: httpx.AsyncClient(headers={"Authorization": f"Bearer {k}"}, timeout=30)
            for t, k in keys.items()
        }
        signups: list[tuple[str, str]] = []
        gate = asyncio.Semaphore(16)

        async def befriend(i: int) -> None:
            tenant = tenants[i % len(tenants)]
            async with gate:
                r = await clients[tenant].get(
                    f"{url['link-service']}/r/{codes[tenant]}",
                    headers={"User-Agent": BROWSER_UA},
                    follow_redirects=False,
                )
                click_id = parse_qs(urlsplit(r.headers["location"]).query)["click_id"][0]
                r = await clients[tenant].post(
                    f"{url['attribution-service']}/v1/conversions",
                    json={"type": "signup", "customer_id": f"cus_friend_{i}", "click_id": click_id},
                )
                assert r.status_code in (201, 202), r.text
                signups.append((tenant, r.json()["id"]))

        await asyncio.gather(*(befriend(i) for i in range(purchases)))
        deadline = time.monotonic() + 120
        waiting = list(signups)
        while waiting and time.monotonic() < deadline:
            still = []
            for tenant, sid in waiting:
                r = await clients[tenant].get(f"{url['attribution-service']}/v1/conversions/{sid}")
                if r.json()["status"] != "attributed":
                    still.append((tenant, sid))
            waiting = still
            if waiting:
                await asyncio.sleep(0.5)
        if waiting:
            raise RuntimeError(f"{len(waiting)} signups not attributed within 120 s")

        settled_s = await settle(database_url)
        reference = await bare_reference(args.rate, purchases)

        db = await asyncpg.connect(database_url)
        meter = cpu.Meter.stack(
            await cpu.postgres_dir(database_url),
            bootstrap,
            receiver=receiver.pid,
        )
        for s in running:
            meter.parts[s.definition.name.replace("-", "_")] = functools.partial(
                cpu.tree, s.process.pid
            )
        answered: dict[str, float] = {}
        balance_at: dict[str, float] = {}
        webhook_at: dict[str, float] = {}
        bad_signatures = 0
        # by status, or by the transport error for a request that got no answer
        errors: dict[int | str, int] = {}
        done = asyncio.Event()

        # (tenant, conversion) answered whose reward was not seen available yet
        unseen: set[tuple[str, str]] = set()

        async def watch() -> None:
            nonlocal bad_signatures
            while not done.is_set():
                # Only the purchases still waiting, each by the rewards' (tenant, conversion)
                # index: the instrument's own cost stays flat as the run goes on (it read every
                # available reward on each 10 ms poll, and its Postgres CPU was counted per
                # purchase: most of it at 200/s).
                waiting = sorted(unseen)
                rows = (
                    await db.fetch(
                        "SELECT r.conversion_id, r.tenant_id FROM unnest($1::text[], $2::text[])"
                        " AS u(tenant_id, conversion_id) JOIN reward.rewards r"
                        " ON r.tenant_id = u.tenant_id AND r.conversion_id = u.conversion_id"
                        " WHERE r.role = 'advocate' AND r.state = 'available'",
                        [t for t, _ in waiting],
                        [c for _, c in waiting],
                    )
                    if waiting
                    else []
                )
                now = time.time()
                for row in rows:
                    balance_at[row["conversion_id"]] = now
                    unseen.discard((row["tenant_id"], row["conversion_id"]))
                while not queue.empty():
                    conversion_id, received, ok = queue.get_nowait()
                    webhook_at.setdefault(conversion_id, received)
                    bad_signatures += not ok
                await asyncio.sleep(poll_interval(len(waiting)))

        watching = asyncio.create_task(watch())

        async def purchase(i: int) -> None:
            tenant = tenants[i % len(tenants)]
            try:
                r = await clients[tenant].post(
                    f"{url['attribution-service']}/v1/conversions",
                    json=purchase_body(i),
                    headers={"Idempotency-Key": f"ord_{i}"},
                )
            except httpx.TransportError as exc:  # overload: counted, not the end of the run
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            if r.status_code != 201:
                errors[r.status_code] = errors.get(r.status_code, 0) + 1
                return
            conversion_id = r.json()["id"]
            answered[conversion_id] = time.time()
            unseen.add((tenant, conversion_id))

        before = meter.snapshot()
        load_before = os.getloadavg()[0]
        await steady(args.rate, purchases, purchase)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(c in balance_at and c in webhook_at for c in answered):
                break
            await asyncio.sleep(0.05)
        cost = cpu.per_op(before, meter.snapshot(), purchases)
        done.set()
        await watching
        await db.close()
        for client in clients.values():
            await client.aclose()
    finally:
        if receiver is not None:
            receiver.kill()
            receiver.join(10)
        services.stop(running)
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(state, ignore_errors=True)

    to_balance = [balance_at[c] - t for c, t in answered.items() if c in balance_at]
    to_webhook = [webhook_at[c] - t for c, t in answered.items() if c in webhook_at]
    return {
        "bench": "time_to_reward",
        "rate": args.rate,
        "purchases": purchases,
        "answered": len(answered),
        "errors": errors,
        "rewards_visible": len(to_balance),
        "webhooks_received": len(to_webhook),
        "bad_signatures": bad_signatures,
        "balance_p50_ms": pct(to_balance, 0.5),
        "balance_p99_ms": pct(to_balance, 0.99),
        "webhook_p50_ms": pct(to_webhook, 0.5),
        "webhook_p99_ms": pct(to_webhook, 0.99),
        "tenants": args.tenants,
        # how long the set-up's events took to go all the way through before the purchases
        "settled_s": round(settled_s, 1),
        **cpu.cost_fields(cost, reference),
        "load_avg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "quick": args.quick,
        "machine": cpu.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="purchases per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of purchases")
    parser.add_argument("--tenants", type=int, default=20, help="advocates (one tenant each)")
    parser.add_argument("--quick", action="store_true", help="20/s for 2 s, 5 advocates")
    args = parser.parse_args()
    if args.quick:
        args.rate, args.duration, args.tenants = 20.0, 2.0, 5
    args.rate = min(max(args.rate, 1.0), 2000.0)
    args.duration = min(max(args.duration, 1.0), 120.0)
    args.tenants = min(max(args.tenants, 1), 200)
    figures = asyncio.run(run(args))
    print(
        f"{figures['answered']} purchases at {figures['rate']}/s: reward in the balance p50 "
        f"{figures['balance_p50_ms']} ms, p99 {figures['balance_p99_ms']} ms (goal < 250); "
        f"signed webhook p50 {figures['webhook_p50_ms']} ms, p99 {figures['webhook_p99_ms']} ms "
        f"(goal < 500); {figures['rewards_visible']} rewards, {figures['webhooks_received']} "
        f"webhooks, {figures['bad_signatures']} bad signatures\n"
        f"CPU per purchase, all processes: {figures['cpu_ms_per_op']} ms; bare app "
        f"{figures['reference_cpu_ms_per_op']} ms (ratio {figures['cpu_ratio']})"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

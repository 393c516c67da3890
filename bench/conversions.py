"""Conversions/s from HTTP accept to conversion.attributed on Kafka.

Runs attribution-service for real (uvicorn in its own process, the outbox relay publishing to a
real Kafka broker, a real Postgres) and drives POST /v1/conversions from this process with a
fixed number of keep-alive connections (closed loop), for a bounded time. Measured in the same
run:

- reference: the raw aiokafka produce rate with acks=all (idempotent producer, the relay's
  settings) of messages the size of our events, i.e. what the publishing path alone allows;
- throughput: conversions whose conversion.attributed arrived on Kafka, per second, from the
  first request to the last event;
- HTTP latency p50/p99 of the accepted requests, and end-to-end lag p50/p99 (request sent ->
  conversion.attributed read back from Kafka).

The load client is a minimal HTTP/1.1 keep-alive asyncio protocol rather than httpx:
on a 2-core machine shared with the service, Postgres and Kafka, a heavier client would measure
itself. Goal (issue #5): >= 1,000 conversions/s with HTTP p99 <= 50 ms. All load goes to
127.0.0.1. Usage: uv run --frozen python bench/conversions.py [--quick] [--profile PATH]
(KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL reuse a running broker / Postgres; BENCH_REPLICAS=2 runs
two service processes; BENCH_CONCURRENCY sets the number of connections.)

Besides the rates it reports the CPU one conversion costs the service processes, the Postgres
backends serving them and this client, and the machine's load average: on a shared 2-core
machine the rate is the cores left over divided by that cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from _common import cpu
from _common.http1 import split_response

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "24"))
# Service processes (replicas, as a deployment scales it): each its own port, pool, consumers
# (the group splits the partitions) and relay (an advisory lock elects one publisher). The load
# connections are spread over them as a load balancer would.
REPLICAS = int(os.environ.get("BENCH_REPLICAS", "1"))
ADVOCATES = 500
HERE = Path(__file__).resolve().parent


# Each friend's address at a domain of its own: "friend1@example.com", "friend2@..." of one
# advocate is what the ring rule flags (one email stem, one rare domain), and a ring goes to
# review instead of being attributed. One rare domain each: the ring rule still reads a signal
# for every conversion (an index lookup that finds no cluster).
BODY = (
    b'{"type": "purchase", "customer_id": "cus_%s_%d", "code": "BENCH%04d",'
    b' "order_id": "%s", "amount": "59.90", "currency": "USD",'
    b' "email": "friend@shop%d.example"}'
)


def request_head(headers: dict[str, str]) -> bytes:
    lines = {"Host": "127.0.0.1", "Content-Type": "application/json", **headers}
    return ("".join(f"{k}: {v}\r\n" for k, v in lines.items()) + "\r\n").encode()


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: a request, then the status and body of the answer,
    parsed straight from the socket's bytes (no stream reader/writer layers: the client shares
    the two cores with what it measures)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None

    @classmethod
    async def open(cls, port: int) -> Conn:
        loop = asyncio.get_running_loop()
        transport, conn = await loop.create_connection(cls, "127.0.0.1", port)
        conn.transport = transport  # uvloop calls connection_made a little later
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc or ConnectionError("connection closed"))

    def _parse(self) -> None:
        if self._answer is None:
            return
        response = split_response(self._buf)
        if response is None:
            return
        status, body, used = response
        del self._buf[:used]
        answer, self._answer = self._answer, None
        answer.set_result((status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._answer

    async def post(self, path: str, body: bytes, key: bytes, head: bytes) -> tuple[int, bytes]:
        """`head`: the header lines after Idempotency-Key (see request_head)."""
        return await self.request(
            b"POST %s HTTP/1.1\r\nContent-Length: %d\r\nIdempotency-Key: %s\r\n%s%s"
            % (path.encode(), len(body), key, head, body)
        )

    async def get(self, path: str) -> tuple[int, bytes]:
        return await self.request(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def bare_reference(seconds: float, head: bytes) -> dict[str, Any]:
    """Issue #24's reference: a bare ASGI app on uvicorn (bench/_common/bare201.py) answering
    the same POSTs from the same client over the same connections: its rate, latency and the
    CPU per request of the app and this client together."""
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
        deadline = time.monotonic() + 30
        while True:
            try:
                (await Conn.open(port)).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        counter = 0
        latencies: list[float] = []

        async def worker(until: float, measured: bool) -> None:
            nonlocal counter
            conn = await Conn.open(port)
            try:
                while time.perf_counter() < until:
                    counter += 1
                    n = counter
                    order = f"ref-{n}"
                    body = BODY % (b"ref", n, n % ADVOCATES, order.encode(), n)
                    started = time.perf_counter()
                    await conn.post("/v1/conversions", body, order.encode(), head)
                    if measured:
                        latencies.append(time.perf_counter() - started)
            finally:
                conn.close()

        warm_until = time.perf_counter() + 1
        await asyncio.gather(*(worker(warm_until, False) for _ in range(CONCURRENCY)))
        meter = cpu.Meter.of(bare_app=proc.pid)
        before = meter.snapshot()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + seconds, True) for _ in range(CONCURRENCY)))
        took = time.perf_counter() - t0
        cost = cpu.per_op(before, meter.snapshot(), len(latencies))
        return {
            "rps": round(len(latencies) / took, 1),
            "p50_ms": round(pct(latencies, 0.5) * 1000, 2),
            "p99_ms": round(pct(latencies, 0.99) * 1000, 2),
            "cpu": cost,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def reference_produce_rate(bootstrap: str, topic: str, size: int, total: int) -> float:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    # the same layout as the service's topics here: 2 partitions, replication 1
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        payload = b"x" * size
        await producer.send_and_wait(topic, payload, key=b"warm")
        started = time.perf_counter()
        futures = [
            await producer.send(topic, payload, key=f"adv_{i % ADVOCATES}".encode())
            for i in range(total)
        ]
        await asyncio.gather(*futures)
        return total / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def seed(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, server_settings={"search_path": "attribution"})
    try:
        await conn.execute(
            "INSERT INTO programs (id, tenant_id, status, name)"
            " VALUES ('prg_b', 'bench', 'active', 'b')"
        )
        await conn.executemany(
            "INSERT INTO advocates (id, tenant_id, program_id, customer_id)"
            " VALUES ($1, 'bench', 'prg_b', $2)",
            [(f"adv_{i}", f"cus_adv_{i}") for i in range(ADVOCATES)],
        )
        await conn.executemany(
            "INSERT INTO codes (code_key, code, tenant_id, program_id, advocate_id)"
            " VALUES ($1, $1, 'bench', 'prg_b', $2)",
            [(f"BENCH{i:04d}", f"adv_{i}") for i in range(ADVOCATES)],
        )
        # a bench drives thousands of conversions per advocate per hour: velocity is not measured
        settings = {"fraud": {"velocity": {"per_advocate_hour": 10**9, "per_advocate_day": 10**9}}}
        await conn.execute(
            "INSERT INTO program_settings (program_id, tenant_id, settings)"
            " VALUES ('prg_b', 'bench', $1::jsonb)",
            json.dumps(settings),
        )
    finally:
        await conn.close()


def start_service(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "attribution_service.main", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): what one conversion costs the
    service whatever else the machine runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def backend_pids(dsn: str) -> dict[int, str]:
    """The Postgres server processes serving the bench database (the services' pools, relay),
    with their application_name."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid, application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {r["pid"]: r["application_name"] for r in rows}
    finally:
        await conn.close()


def backends_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        # gone, or another machine's (DATABASE_URL): not counted
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


async def scrape(port: int) -> dict[str, float]:
    """The group commit's figures from the service's /metrics."""
    c = await Conn.open(port)
    try:
        _, body = await c.get("/metrics")
    finally:
        c.close()
    text = body.decode()
    wanted = {
        "attribution_conversion_batch_size_sum": "size_sum",
        "attribution_conversion_batch_size_count": "size_count",
        "attribution_conversion_batch_retries_total": "retries",
        "attribution_conversion_batch_seconds_sum": "seconds_sum",
        "attribution_conversion_batch_seconds_count": "seconds_count",
    }
    out = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[wanted[name]] = float(value)
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


async def run(quick: bool, profile: Path | None = None) -> dict[str, Any]:
    from devstack.kafka import KafkaBroker
    from devstack.postgres import start_embedded

    root = Path(tempfile.mkdtemp(prefix="bench-conversions-"))
    broker = pg = None
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = KafkaBroker(root / "kafka", heap="512m")
            broker.start()
            bootstrap = broker.bootstrap_servers
        admin = os.environ.get("DATABASE_URL")
        if not admin:
            pg, admin = start_embedded(root / "pg")
        # the broker's JVM: the one this bench started, or a running one on this machine
        broker_pid = (
            broker._proc.pid if broker is not None and broker._proc else cpu.kafka_pid(bootstrap)
        )
        figures = await measure(quick, profile, root, bootstrap, admin, broker_pid)
    finally:
        # also when the run fails: a broker left behind would take CPU from the next run
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.cleanup()
    # The broker's log and the database fill half a gigabyte a run; a failed run keeps them and
    # the services' logs to read.
    shutil.rmtree(root, ignore_errors=True)
    return figures


async def measure(
    quick: bool,
    profile: Path | None,
    root: Path,
    bootstrap: str,
    admin: str,
    broker_pid: int | None,
) -> dict[str, Any]:
    """`broker_pid`: the broker this bench started (a JVM on the same cores), if any."""
    from aiokafka import AIOKafkaConsumer

    from devstack.paths import free_port
    from devstack.postgres import create_scratch_database
    from devstack.testing import migrate

    seconds = 3 if quick else 20
    produced = 2000 if quick else 20000
    prefix = f"bench{secrets.token_hex(3)}."
    dsn = await create_scratch_database(admin)
    await migrate(dsn, "attribution", "attribution_service")
    await seed(dsn)

    # A broker this bench just started is a cold JVM: its JIT warm-up is paid by neither side
    # (a production broker is warm). One unmeasured round of the reference's load first, then
    # the reference, then the service.
    await reference_produce_rate(bootstrap, prefix + "bench.warmup", 900, produced)
    reference = round(
        await reference_produce_rate(bootstrap, prefix + "bench.reference", 900, produced), 1
    )
    key = "rk_bench_" + secrets.token_urlsafe(12)
    bare = await bare_reference(1 if quick else 8, request_head({"Authorization": f"Bearer {key}"}))
    ports = [free_port() for _ in range(REPLICAS)]
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_TOPIC_PARTITIONS": "2",
        "API_KEYS": json.dumps(
            [{"tenant_id": "bench", "key_sha256": hashlib.sha256(key.encode()).hexdigest()}]
        ),
        "LOG_LEVEL": "WARNING",
        # a local run: the service accepts its dev secrets (settings.refuse_dev_defaults)
        "ENVIRONMENT": "dev",
        "OTEL_SDK_DISABLED": "true",
        "DB_POOL_MAX_SIZE": "20",
        "OUTBOX_POLL_INTERVAL_SECONDS": "0.2",
    }
    services = [
        start_service({**env, "HTTP_PORT": str(port)}, root / f"service-{i}.log")
        for i, port in enumerate(ports)
    ]
    figures: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 90
        for port, service in zip(ports, services, strict=True):
            while True:
                try:
                    c = await Conn.open(port)
                    status, _ = await c.get("/readyz")
                    c.close()
                    if status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or service.poll() is not None:
                    raise RuntimeError(f"service did not start; see the logs in {root}")
                await asyncio.sleep(0.3)

        topic = prefix + "attribution.events"
        received: dict[str, float] = {}
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        stop_consuming = asyncio.Event()

        async def consume() -> None:
            while not stop_consuming.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batch.values():
                    for r in records:
                        # only the events counted are parsed (this process's CPU is reported)
                        if b"conversion.attributed.v1" not in r.value:
                            continue
                        event = json.loads(r.value)
                        if event["type"] == "conversion.attributed.v1":
                            received[event["data"]["order_id"]] = now

        consuming = asyncio.create_task(consume())
        head = request_head({"Authorization": f"Bearer {key}"})
        sent: dict[str, float] = {}
        latencies: list[float] = []
        errors: dict[int, int] = {}
        counter = 0

        async def worker(phase: str, until: float, port: int) -> None:
            nonlocal counter
            conn = await Conn.open(port)
            try:
                while time.perf_counter() < until:
                    counter += 1
                    n = counter
                    order = f"{phase}-{n}"
                    # the JSON encoder's output, formatted directly (the client stays light)
                    body = BODY % (phase.encode(), n, n % ADVOCATES, order.encode(), n)
                    started = time.perf_counter()
                    status, _ = await conn.post("/v1/conversions", body, order.encode(), head)
                    took = time.perf_counter() - started
                    if status != 201:
                        errors[status] = errors.get(status, 0) + 1
                        continue
                    if phase == "run":
                        sent[order] = started
                        latencies.append(took)
            finally:
                conn.close()

        # warm up (connections, prepared statements, JIT of the slow paths), then measure
        until = time.perf_counter() + (1 if quick else 3)
        await asyncio.gather(
            *(worker("warm", until, ports[i % REPLICAS]) for i in range(CONCURRENCY))
        )
        # all of Postgres (postmaster, WAL writer, checkpointer and every backend) for
        # cpu_ms_per_op; postgres_cpu_ms_per_conversion stays the serving backends'
        pg_all = cpu.Meter.stack(await cpu.postgres_dir(dsn), None, client=False)
        pg_all0 = pg_all.snapshot()
        cpu0 = sum(cpu_seconds(s.pid) for s in services)
        pg_pids = await backend_pids(dsn)
        # each serving backend's CPU: all of them, the relay's, and by application_name
        backends0 = {p: backends_cpu([p]) for p in pg_pids}
        broker0 = backends_cpu([broker_pid]) if broker_pid else 0.0
        client0 = time.process_time()
        load_before = os.getloadavg()[0]
        profiler = None
        if profile is not None:
            # py-spy samples the (first) service process while it serves the measured phase
            profiler = subprocess.Popen(  # noqa: S603, ASYNC220
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(services[0].pid),
                    "--duration",
                    str(seconds),
                    "--format",
                    "raw" if profile.suffix == ".txt" else "speedscope",
                    "--output",
                    str(profile),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
            )
        t0 = time.perf_counter()
        await asyncio.gather(
            *(worker("run", t0 + seconds, ports[i % REPLICAS]) for i in range(CONCURRENCY))
        )
        http_done = time.perf_counter()
        if profiler is not None:
            profiler.wait(timeout=60)
        client_cpu = time.process_time() - client0
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            if all(o in received for o in sent):
                break
            await asyncio.sleep(0.1)
        cpu1 = sum(cpu_seconds(s.pid) for s in services)
        pg_all_ms = cpu.per_op(pg_all0, pg_all.snapshot(), len(sent))["total"]
        by_name: dict[str, float] = {}
        for p, before in backends0.items():
            by_name[pg_pids[p]] = by_name.get(pg_pids[p], 0.0) + backends_cpu([p]) - before
        pg_cpu = sum(by_name.values())
        relay_cpu = sum(v for name, v in by_name.items() if name.endswith("outbox-relay"))
        broker1 = backends_cpu([broker_pid]) if broker_pid else 0.0
        stop_consuming.set()
        await consuming
        await consumer.stop()
        batches = await scrape(ports[0])
        arrived = [o for o in sent if o in received]
        last = max(received[o] for o in arrived)
        lags = [received[o] - sent[o] for o in arrived]
        figures.update(
            conversions_per_s=round(len(arrived) / (last - t0), 1),
            http_accepted_per_s=round(len(sent) / (http_done - t0), 1),
            conversions=len(sent),
            arrived=len(arrived),
            http_p50_ms=round(pct(latencies, 0.5) * 1000, 1),
            http_p99_ms=round(pct(latencies, 0.99) * 1000, 1),
            e2e_lag_p50_ms=round(pct(lags, 0.5) * 1000, 1),
            e2e_lag_p99_ms=round(pct(lags, 0.99) * 1000, 1),
            concurrency=CONCURRENCY,
            replicas=REPLICAS,
            # service processes' CPU (HTTP, decision, outbox relay) per conversion
            service_cpu_ms_per_conversion=round((cpu1 - cpu0) * 1000 / max(len(sent), 1), 2),
            # this process (load client and Kafka reader) while it sent: is the bench the limit?
            # the Postgres backends serving them (same machine, same cores)
            postgres_cpu_ms_per_conversion=round(pg_cpu * 1000 / max(len(sent), 1), 2),
            # of which the outbox relay's backend (reading and marking the events)
            postgres_relay_cpu_ms_per_conversion=round(relay_cpu * 1000 / max(len(sent), 1), 2),
            client_cpu_ms_per_conversion=round(client_cpu * 1000 / max(len(sent), 1), 2),
            # the Kafka broker's (0 when KAFKA_BOOTSTRAP_SERVERS names a running one)
            kafka_cpu_ms_per_conversion=round((broker1 - broker0) * 1000 / max(len(sent), 1), 2),
            # 1-minute load average of the machine before and after the measured phase
            load_average_before=round(load_before, 1),
            load_average=round(os.getloadavg()[0], 1),
            cpus=os.cpu_count(),
            # group commit (first replica, warm-up included): requests per transaction
            mean_batch=round(batches["size_sum"] / max(batches["size_count"], 1), 1),
            # and the mean wall time of one (decide, write, commit)
            mean_batch_ms=round(
                batches["seconds_sum"] * 1000 / max(batches["seconds_count"], 1), 1
            ),
            batch_retries=int(batches["retries"]),
            errors=errors,
            postgres_all_cpu_ms_per_conversion=round(pg_all_ms, 2),
            # the serving backends' by application_name (pool, writers, relay)
            postgres_cpu_ms_per_conversion_by_backend={
                name: round(v * 1000 / max(len(sent), 1), 3) for name, v in sorted(by_name.items())
            },
        )
    finally:
        for service in services:
            service.terminate()
        for service in services:
            try:
                service.wait(30)
            except subprocess.TimeoutExpired:
                service.kill()

    print(json.dumps(figures), file=sys.stderr)
    figures["reference_produce_per_s"] = reference
    figures["ratio"] = round(figures["conversions_per_s"] / figures["reference_produce_per_s"], 3)
    figures["goal_met"] = figures["conversions_per_s"] >= 1000 and figures["http_p99_ms"] <= 50
    # issue #24: a conversion's CPU in all processes (service, Postgres, Kafka, this client)
    # beside a bare ASGI app's per POST, same client, same run
    op = {
        "attribution_service": figures["service_cpu_ms_per_conversion"],
        "postgres": figures["postgres_all_cpu_ms_per_conversion"],
        "kafka": figures["kafka_cpu_ms_per_conversion"],
        "load_client": figures["client_cpu_ms_per_conversion"],
    }
    op["total"] = round(sum(op.values()), 3)
    figures.update(cpu.cost_fields(op, bare["cpu"]))
    figures["reference_http_per_s"] = bare["rps"]
    figures["reference_http_p50_ms"] = bare["p50_ms"]
    figures["reference_http_p99_ms"] = bare["p99_ms"]
    figures["quick"] = quick
    figures["machine"] = cpu.machine()
    return figures


def main() -> None:
    quick = "--quick" in sys.argv
    profile = None
    if "--profile" in sys.argv:
        # --profile PATH: py-spy of the service during the measured phase (.txt: collapsed
        # stacks, anything else: speedscope JSON)
        profile = Path(sys.argv[sys.argv.index("--profile") + 1]).resolve()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    figures = asyncio.run(run(quick, profile))
    print(
        f"reference (raw aiokafka produce, acks=all): {figures['reference_produce_per_s']}/s\n"
        f"conversions accepted -> conversion.attributed on Kafka: {figures['conversions_per_s']}/s"
        f" (ratio {figures['ratio']}); HTTP accepted {figures['http_accepted_per_s']}/s\n"
        f"HTTP latency p50 {figures['http_p50_ms']} ms, p99 {figures['http_p99_ms']} ms; "
        f"end-to-end lag p50 {figures['e2e_lag_p50_ms']} ms, p99 {figures['e2e_lag_p99_ms']} ms\n"
        f"goal (>= 1000/s, p99 <= 50 ms) met: {figures['goal_met']}"
    )
    print(json.dumps({"bench": "conversions", **figures}))


if __name__ == "__main__":
    main()

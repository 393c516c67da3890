"""Redirect throughput and latency of link-service's `/r/{code}`, against the Python limit.

Starts, in one run, on this machine:
- Kafka and Postgres (devstack; KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL reuse running ones),
- link-service as a real process (`link-service serve`: uvicorn, one worker unless --workers, relay,
  click writer, cache invalidator), with a program and 200 advocates,
- the reference: a bare ASGI app on uvicorn (one worker, same loop and HTTP parser) that only
  answers 302 (bench/_common/bare302.py),
and drives both over loopback with wrk (installed from Debian if missing; closed loop, fixed
connections) for peak requests/s and p50/p99. link-service's outbox relay publishes the clicks to
Kafka in the same process, and at peak it falls behind; the figure compared with the bare app is
the SUSTAINED rate: the run's redirects over the time until their last event was published
(`burst_rps` is the rate the clients saw). Then link-service alone in open loop at half the
sustained rate (bench/_common/redirect_loadgen.py, latency from each request's scheduled time)
for p99 at half load. Afterwards it checks that every recorded click has exactly one
link.clicked event on Kafka and that the clicks recorded match the redirects counted (wrk does
not count requests still in flight when its time is up, so up to one per connection more may be
recorded).

Then clicks all the way through (issue #24): attribution-service as a process of its own takes
link.clicks in (its schema, same database) while the redirect runs at saturation again; it reports
the clicks taken in per second beside the redirect's rate, the clicks not yet taken in when the
load stops, and the CPU of every process (link-service, attribution-service, Postgres, Kafka,
wrk; each apart too) from the load's start until attribution has them all, per click. Every
figure's CPU beside the bare app's is `cpu_ms_per_op` / `reference_cpu_ms_per_op` / `cpu_ratio`.

Goals (issue #4): rps >= 50% of the bare app's; p99 <= 10 ms at half of peak load; exactly one
click event per counted redirect. The machine has 2 cores shared by the service, Postgres,
Kafka and the load generator, so absolute figures are modest; the ratio is what compares.

Usage: uv run --frozen python bench/redirect.py [--quick] [--duration 10] [--connections 32]
Last line: one JSON object {"bench": "redirect", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from _common import cpu

HERE = Path(__file__).resolve().parent
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)
ADVOCATES = 200


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("installing wrk (apt-get) ...", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "wrk"], check=False)  # noqa: S603
    path = shutil.which("wrk")
    if not path:
        subprocess.run([*sudo, "apt-get", "update", "-q"], check=False)  # noqa: S603
        subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "wrk"], check=True)  # noqa: S603
        path = shutil.which("wrk")
    assert path, "wrk could not be installed"
    return path


def run_wrk(
    binary: str, port: int, request_lua: str, duration: float, connections: int
) -> dict[str, int]:
    """Closed-loop peak with wrk, one thread; `request_lua` sets up and defines `request`.
    Returns wrk's figures: requests, status_errors (answers outside 2xx/3xx), errors (socket),
    p50_us, p99_us, duration_us. bench/advocate.py drives /v1/me through it too."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        request_lua
        + """
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %d, \\"status_errors\\": %d, \\"errors\\": %d, "
    .. "\\"p50_us\\": %d, \\"p99_us\\": %d, \\"duration_us\\": %d}\\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout, latency:percentile(50),
    latency:percentile(99), summary.duration))
end
"""
    )
    out = subprocess.run(  # noqa: S603
        [
            binary,
            "-t1",
            f"-c{connections}",
            f"-d{int(duration)}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    script.unlink()
    match = re.search(r"^JSON (.*)$", out, re.M)
    assert match, out
    raw: dict[str, int] = json.loads(match.group(1))
    return raw


def py_spy(pid: int, duration: float, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling one process for `duration` seconds (speedscope JSON to `output`)."""
    return subprocess.Popen(  # noqa: S603
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(duration)),
            "--format",
            "speedscope",
            "--output",
            str(output),
            "--nonblocking",
            "--subprocesses",
        ]
    )


def wrk(
    binary: str, port: int, paths: list[str], duration: float, connections: int
) -> dict[str, float]:
    """Closed-loop peak with wrk; rotates through the paths with a Lua script."""
    lua_paths = ", ".join(json.dumps(p) for p in paths)
    raw = run_wrk(
        binary,
        port,
        f"""
local paths = {{{lua_paths}}}
local i = 0
wrk.headers["User-Agent"] = {json.dumps(BROWSER_UA)}
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
""",
        duration,
        connections,
    )
    return {
        "requests": raw["requests"],
        "non_3xx": raw["status_errors"],
        "errors": raw["errors"],
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


def open_loop(port: int, paths_file: Path, rate: float, duration: float) -> dict[str, Any]:
    out = subprocess.run(  # noqa: S603
        [
            sys.executable,
            str(HERE / "_common" / "redirect_loadgen.py"),
            "--port",
            str(port),
            "--paths",
            str(paths_file),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--connections",
            "64",
            "--user-agent",
            BROWSER_UA,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def link_meter(service_pid: int, pg_dir: str | None, bootstrap: str | None) -> cpu.Meter:
    """CPU seconds used by each part of the redirect: the service (with its uvicorn workers),
    the Postgres and the Kafka broker of the run (started by it or handed to it, found on this
    machine by data directory and port) and the load generator (wrk or the open-loop client,
    children of this process). The machine is shared, so rates move with other people's load;
    CPU per redirect barely does."""
    return cpu.Meter.stack(
        pg_dir, bootstrap, client_name="load_generator", children_only=True, service=service_pid
    )


STARTED = time.monotonic()


def phase(name: str) -> None:
    """Where a run spends its time, on stderr (the quick profile's budget is two minutes for
    every bench together)."""
    print(f"[{time.monotonic() - STARTED:6.1f} s] {name}", file=sys.stderr, flush=True)


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(url)


async def recorded_click_ids(database_url: str) -> set[str]:
    """The ids of the clicks link-service recorded (its outbox keeps none once they are
    published, OUTBOX_KEEP_PUBLISHED_HOURS: what reached Kafka is compared with these)."""
    conn = await asyncpg.connect(database_url)
    try:
        return {r["id"] for r in await conn.fetch("SELECT id FROM link.clicks")}
    finally:
        await conn.close()


async def click_counts(database_url: str) -> tuple[int, int]:
    """Clicks link-service has recorded, and copies attribution-service has taken in."""
    conn = await asyncpg.connect(database_url)
    try:
        served = await conn.fetchval("SELECT count(*) FROM link.clicks")
        taken = await conn.fetchval("SELECT count(*) FROM attribution.clicks")
        return int(served), int(taken)
    finally:
        await conn.close()


async def wait_taken_in(database_url: str, limit_s: float) -> tuple[float, bool]:
    """Until attribution-service has a copy of every click link-service recorded: the seconds
    it took and whether it got there within `limit_s`. One connection, and link's count read
    again only when attribution's reaches it (the polls' own Postgres CPU stays small; this
    runs inside the end-to-end CPU window)."""
    started = time.monotonic()
    conn = await asyncpg.connect(database_url)
    try:
        served = int(await conn.fetchval("SELECT count(*) FROM link.clicks"))
        while True:
            taken = int(await conn.fetchval("SELECT count(*) FROM attribution.clicks"))
            if taken >= served:
                served = int(await conn.fetchval("SELECT count(*) FROM link.clicks"))
                if taken >= served:
                    return time.monotonic() - started, True
            if time.monotonic() - started > limit_s:
                return time.monotonic() - started, False
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def wait_published(database_url: str, limit_s: float = 300) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + limit_s
        while await conn.fetchval("SELECT count(*) FROM link.outbox WHERE published_at IS NULL"):
            if time.monotonic() > deadline:
                raise TimeoutError("outbox not drained")
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def kafka_click_ids(bootstrap: str, topic: str) -> list[str]:
    from devstack.testing import read_to_end

    records = await read_to_end(bootstrap, topic)
    return [json.loads(r.value)["id"] for r in records]


async def postgres_commit_floor(database_url: str, commits: int = 100) -> dict[str, Any]:
    """What the bench's Postgres promises and what one durable commit costs on this disk: a
    one-row INSERT per transaction, the median and p90 over `commits`. Group commit cannot
    answer a redirect faster than this (its settings are the production defaults: fsync and
    synchronous_commit on)."""
    conn = await asyncpg.connect(database_url)
    try:
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("fsync", "synchronous_commit", "wal_sync_method")
        }
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_floor (n int)")
        times = []
        for n in range(commits):
            started = time.perf_counter()
            await conn.execute("INSERT INTO bench_commit_floor VALUES ($1)", n)
            times.append((time.perf_counter() - started) * 1000)
        await conn.execute("DROP TABLE bench_commit_floor")
        times.sort()
        return {
            **settings,
            "commit_p50_ms": round(times[len(times) // 2], 2),
            "commit_p90_ms": round(times[int(len(times) * 0.9)], 2),
        }
    finally:
        await conn.close()


def click_commit_figures(base_url: str) -> dict[str, float]:
    """Batches, clicks and seconds spent committing them, from link-service's /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    figures: dict[str, float] = {}
    for name, key in (
        ("link_click_commit_seconds_count", "batches"),
        ("link_click_commit_seconds_sum", "seconds"),
        ("link_clicks_committed_total", "clicks"),
    ):
        match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        if match:
            figures[key] = float(match.group(1))
    return figures if len(figures) == 3 else {}


def histogram(base_url: str, metric: str, labels: str = "") -> dict[float, float]:
    """Cumulative bucket counts {upper bound: count} of one series on link-service's /metrics
    (`labels`: a substring its label set must contain)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    out: dict[float, float] = {}
    for match in re.finditer(rf"^{metric}_bucket{{(.*)}} ([0-9.e+-]+)$", text, re.M):
        if labels in match.group(1):
            le = re.search(r'le="([^"]+)"', match.group(1))
            if le:
                out[float(le.group(1))] = out.get(float(le.group(1)), 0.0) + float(match.group(2))
    return out


def share_over(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Of what was observed between two snapshots: the share over each bucket bound, in %."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    return {
        f">{bound * 1000:g}ms": round(100 * (total - (n - before.get(bound, 0.0))) / total, 2)
        for bound, n in sorted(after.items())
        if total and bound != float("inf") and bound <= 0.25
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes for link-service AND the bare app (default 1)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="also sample link-service with py-spy during the peak run (speedscope JSON here),"
        " and attribution-service while it takes clicks in (beside it: <name>.attribution.json)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short sanity run (1 s phases, 50 advocates): CI smoke, not a measurement",
    )
    args = parser.parse_args()
    if args.quick:
        args.duration = 1.0
    duration = min(max(args.duration, 1.0 if args.quick else 2.0), 60.0)
    warm_s = 1 if args.quick else 3
    connections = min(max(args.connections, 1), 256)
    workers = min(max(args.workers, 1), 8)

    from devstack import services
    from devstack.kafka import KafkaBroker
    from devstack.paths import free_port
    from devstack.postgres import create_database, start_embedded

    wrk_bin = ensure_wrk()
    load_before = os.getloadavg()
    state = Path(tempfile.mkdtemp(prefix="bench-redirect-"))
    broker = pg = None
    procs: list[subprocess.Popen[bytes]] = []
    running: list[Any] = []
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = KafkaBroker(state / "kafka")
            broker.start()
            bootstrap = broker.bootstrap_servers
        admin_dsn = os.environ.get("DATABASE_URL")
        if not admin_dsn:
            pg, admin_dsn = start_embedded(state / "pg")
        database_url = asyncio.run(create_database(admin_dsn, f"bench_{secrets.token_hex(4)}"))
        phase("commit floor")
        pg_floor = asyncio.run(postgres_commit_floor(database_url))
        key = "rk_bench_" + secrets.token_urlsafe(16)
        prefix = f"bench{secrets.token_hex(3)}."
        cfg = services.StackConfig(
            database_url=database_url,
            kafka_bootstrap_servers=bootstrap,
            api_keys=[
                {"tenant_id": "bench", "key_sha256": hashlib.sha256(key.encode()).hexdigest()}
            ],
            topic_prefix=prefix,
            fixed_ports=False,
            log_dir=state / "logs",
            extra_env={"LOG_LEVEL": "WARNING"},
        )
        link = (services.SERVICES[0],)
        phase("migrate link-service and attribution-service")
        # both services' migrations at once (attribution-service's schema is only a schema
        # until its process starts, after the link-service-only phases)
        attribution_def = services.SERVICES[1]
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda d: services.migrate(cfg, (d,)), (link[0], attribution_def)))
        if workers == 1:
            running = services.start(cfg, link)
        else:
            # As production would run it for throughput: uvicorn's own worker processes, each
            # with its runtime (the outbox relay's advisory lock makes one of them publish;
            # each has its own code cache, kept fresh by its own link.events reader).
            assert cfg.log_dir is not None
            cfg.log_dir.mkdir(parents=True, exist_ok=True)
            log_file = open(cfg.log_dir / "link-service.log", "ab")  # noqa: SIM115
            port = cfg.port(link[0])
            running = [
                services.RunningService(
                    link[0],
                    port,
                    subprocess.Popen(  # noqa: S603
                        [
                            sys.executable,
                            "-m",
                            "uvicorn",
                            "link_service.main:create_app",
                            "--factory",
                            "--workers",
                            str(workers),
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(port),
                            "--no-access-log",
                            "--log-level",
                            "warning",
                            "--timeout-graceful-shutdown",
                            "30",
                        ],
                        env=cfg.env(link[0]),
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                    ),
                )
            ]
        phase("waiting for link-service")
        services.wait_ready(running, timeout=180)
        link_port = running[0].port

        bare_port = free_port()
        procs.append(
            subprocess.Popen(  # noqa: S603
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(HERE / "_common"),
                    "bare302:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(bare_port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    "--lifespan",
                    "off",
                    "--workers",
                    str(workers),
                ]
            )
        )
        wait_http(f"http://127.0.0.1:{bare_port}/")

        with httpx.Client(
            base_url=running[0].url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as api:
            program = api.post(
                "/v1/programs",
                json={"name": "Bench", "landing_url": "https://shop.example.com/join?src=ref"},
            ).json()
            phase("advocates")
            codes = [
                api.post(
                    f"/v1/programs/{program['id']}/advocates", json={"customer_id": f"c{i}"}
                ).json()["code"]
                for i in range(ADVOCATES // 4 if args.quick else ADVOCATES)
            ]
        paths = [f"/r/{c}" for c in codes]
        paths_file = state / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")

        pg_dir = asyncio.run(cpu.postgres_dir(database_url))
        link_cpu = link_meter(running[0].process.pid, pg_dir, bootstrap)
        bare_cpu = cpu.Meter.of(
            client_name="load_generator", children_only=True, service=procs[0].pid
        )
        # warm-up: caches, prepared statements, the UA parser's regexes, connection pools
        phase("warm-up")
        warm = wrk(wrk_bin, link_port, paths, warm_s, connections)
        wrk(wrk_bin, bare_port, paths, max(warm_s - 1, 1), connections)
        before = bare_cpu.snapshot()
        bare = wrk(wrk_bin, bare_port, paths, duration, connections)
        bare_cost = cpu.per_op(before, bare_cpu.snapshot(), int(bare["requests"]))
        asyncio.run(wait_published(database_url))
        profiler = py_spy(running[0].process.pid, duration, args.profile) if args.profile else None
        before = link_cpu.snapshot()
        phase("peak")
        peak = wrk(wrk_bin, link_port, paths, duration, connections)
        if profiler is not None:
            profiler.wait(timeout=60)
        # The relay publishes in the same process; what it has not published by the end of the
        # run is work the peak deferred. Sustained rps counts the time until it is on Kafka.
        drain_started = time.monotonic()
        asyncio.run(wait_published(database_url))
        drain = time.monotonic() - drain_started
        # CPU per redirect until its click is on Kafka (the drain's share included).
        link_cost = cpu.per_op(before, link_cpu.snapshot(), int(peak["requests"]))
        sustained = peak["requests"] / (peak["requests"] / peak["rps"] + drain)
        half_rate = max(sustained / 2, 10.0)
        handled = "/r/{code}"
        served_before = histogram(running[0].url, "http_request_duration_seconds", handled)
        commits_before = histogram(running[0].url, "link_click_commit_seconds")
        phase("half load")
        half = open_loop(link_port, paths_file, half_rate, duration)
        # Where the half-load tail is spent: in the service's handler (from its first byte to its
        # 302, the click's commit included) and in the group commits themselves.
        half_served = share_over(
            served_before,
            histogram(running[0].url, "http_request_duration_seconds", handled),
        )
        half_commits = share_over(
            commits_before, histogram(running[0].url, "link_click_commit_seconds")
        )
        # The same open-loop client at the same rate against the bare app: what the client and
        # the machine add to any latency (the floor under half_load_p99_ms).
        phase("bare half load")
        bare_half = open_loop(bare_port, paths_file, half_rate, duration)

        # Clicks all the way through (issue #24): attribution-service takes link.clicks in, a
        # process of its own with its own schema in the same database. Started only now, so
        # the figures above keep their meaning (link-service alone); it first catches up on
        # the clicks so far (its warm-up), then the redirect runs at saturation again while it
        # consumes, and the CPU of every process counts until it has taken in the last click.
        phase("attribution-service starting")
        attribution = services.start(cfg, (attribution_def,))
        running += attribution
        phase("waiting for attribution-service, then its catch-up")
        services.wait_ready(attribution, timeout=180)
        catch_up_limit = 90.0 if args.quick else 600.0
        asyncio.run(wait_taken_in(database_url, catch_up_limit))
        e2e_cpu = cpu.Meter.stack(
            pg_dir,
            bootstrap,
            client_name="load_generator",
            children_only=True,
            link_service=running[0].process.pid,
            attribution_service=attribution[0].process.pid,
        )
        served0, taken0 = asyncio.run(click_counts(database_url))
        before = e2e_cpu.snapshot()
        profiler = (
            py_spy(
                attribution[0].process.pid,
                duration,
                args.profile.with_suffix(".attribution" + args.profile.suffix),
            )
            if args.profile
            else None
        )
        phase("clicks all the way through")
        through = wrk(wrk_bin, link_port, paths, duration, connections)
        if profiler is not None:
            profiler.wait(timeout=60)
        served1, taken1 = asyncio.run(click_counts(database_url))
        through_s = through["requests"] / through["rps"] if through["rps"] else duration
        attribution_rate = (taken1 - taken0) / through_s
        attribution_lag_at_end = served1 - taken1
        phase("attribution catching up")
        catch_up_s, caught_up = asyncio.run(wait_taken_in(database_url, catch_up_limit))
        after = e2e_cpu.snapshot()
        served2, _ = asyncio.run(click_counts(database_url))
        e2e_clicks = served2 - served0
        e2e_cost = cpu.per_op(before, after, e2e_clicks)

        asyncio.run(wait_published(database_url))
        recorded = asyncio.run(recorded_click_ids(database_url))  # once wait_published is done
        clicks = len(recorded)
        commits = click_commit_figures(running[0].url)
        phase("reading link.clicks back")
        ids = asyncio.run(kafka_click_ids(bootstrap, prefix + "link.clicks"))
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        from devstack import services as svc

        phase("stopping")
        svc.stop(running)
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(state, ignore_errors=True)

    phase("stopped")
    load_after = os.getloadavg()
    counted = (
        warm["requests"] + peak["requests"] + half["statuses"].get("302", 0) + through["requests"]
    )
    in_flight_slack = 3 * connections
    exactly_once = (
        len(ids) == len(set(ids)) == clicks
        and set(ids) == recorded
        and counted <= clicks <= counted + in_flight_slack
        and peak["non_3xx"] == 0
        and through["non_3xx"] == 0
        and half["errors"] == 0
    )
    ratio = sustained / bare["rps"] if bare["rps"] else 0.0
    burst_ratio = peak["rps"] / bare["rps"] if bare["rps"] else 0.0
    print(
        f"bare ASGI 302 (reference): {bare['rps']:8.0f} rps  p50 {bare['p50_ms']:.2f} ms  "
        f"p99 {bare['p99_ms']:.2f} ms"
    )
    print(
        f"link-service /r/{{code}}:   {peak['rps']:8.0f} rps  p50 {peak['p50_ms']:.2f} ms  "
        f"p99 {peak['p99_ms']:.2f} ms   (burst ratio {burst_ratio:.2f})"
    )
    print(
        f"  sustained, until every click event was on Kafka ({drain:.1f} s after the run): "
        f"{sustained:.0f} rps   ratio {ratio:.2f} (goal >= 0.5)"
    )
    if commits:
        print(
            f"  click group commits: {commits['batches']:.0f} batches, "
            f"{commits['clicks'] / max(commits['batches'], 1):.1f} clicks each, "
            f"{commits['seconds'] / max(commits['batches'], 1) * 1000:.1f} ms per commit on average"
        )
    print(
        f"half of peak ({half_rate:.0f} rps offered, open loop): {half['rps']:.0f} rps  "
        f"p50 {half['p50_ms']:.2f} ms  p99 {half['p99_ms']:.2f} ms (goal <= 10 ms)"
        f"\n  requests over 50 ms were scheduled at these seconds into the run: "
        f"{half.get('slow_over_50ms_at_s')}"
    )
    print(
        f"  the bare app at the same offered rate, same client: p50 {bare_half['p50_ms']:.2f} ms"
        f"  p99 {bare_half['p99_ms']:.2f} ms (the client's and the machine's share)"
    )
    print(f"  redirects over a bound in the service's own timing (%): {half_served}")
    print(f"  group commits over a bound (%): {half_commits}")
    print(
        "CPU per redirect at peak, ms (until on Kafka): "
        + ", ".join(f"{k} {v}" for k, v in link_cost.items())
    )
    print(
        "CPU per request of the bare app, ms: "
        + ", ".join(f"{k} {v}" for k, v in bare_cost.items())
    )
    budget = 2 * 1000 / link_cost["total"] if link_cost["total"] else 0.0
    print(
        f"  2 cores at 100% for this run's parts alone allow at most {budget:.0f} redirects/s "
        f"= {budget / bare['rps'] if bare['rps'] else 0:.2f} of the bare app's rate (perfect "
        "overlap, nobody else on the machine)"
    )
    print(
        f"redirects counted {counted}, clicks recorded {clicks}, link.clicked on Kafka "
        f"{len(ids)} ({len(set(ids))} distinct, the recorded ones: "
        f"{'yes' if set(ids) == recorded else 'NO'}): "
        f"exactly once {'yes' if exactly_once else 'NO'}"
    )
    print(
        f"bench Postgres: fsync={pg_floor['fsync']} synchronous_commit="
        f"{pg_floor['synchronous_commit']} wal_sync_method={pg_floor['wal_sync_method']}; "
        f"one-row commit p50 {pg_floor['commit_p50_ms']} ms, p90 {pg_floor['commit_p90_ms']} ms"
    )
    print(
        f"clicks all the way through: redirect {through['rps']:.0f}/s at saturation, "
        f"attribution took in {attribution_rate:.0f} clicks/s meanwhile "
        f"({'keeps up' if attribution_rate >= through['rps'] * 0.98 else 'falls behind'}); "
        f"{attribution_lag_at_end} not yet taken in when the load stopped, caught up "
        f"{catch_up_s:.1f} s later{'' if caught_up else ' (NOT within the limit)'}"
    )
    e2e_ratio = e2e_cost["total"] / bare_cost["total"] if bare_cost["total"] else 0.0
    print(
        f"  CPU per click until attribution has it, ms ({e2e_clicks} clicks): "
        + ", ".join(f"{k} {v}" for k, v in e2e_cost.items())
        + f"  = {e2e_ratio:.1f}x a bare request (goals: <= 0.6 ms, <= 15x)"
    )
    print(f"machine load average (1 min): {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    ratio_cpu = link_cost["total"] / bare_cost["total"] if bare_cost["total"] else None
    print(
        json.dumps(
            {
                "bench": "redirect",
                # issue #24: a redirect's CPU in all processes until its click is on Kafka
                # (cpu_ms_per_redirect's total) over a bare ASGI request's in the same run
                "cpu_ms_per_op": round(link_cost["total"], 3),
                "reference_cpu_ms_per_op": round(bare_cost["total"], 3),
                "cpu_ratio": round(ratio_cpu, 2) if ratio_cpu is not None else None,
                # clicks all the way through: attribution-service consuming while the
                # redirect runs at saturation, CPU of every process until it has them all
                "through_rps": round(through["rps"]),
                "attribution_clicks_per_s": round(attribution_rate),
                "attribution_lag_at_end": attribution_lag_at_end,
                "attribution_catch_up_s": round(catch_up_s, 2),
                "attribution_caught_up": caught_up,
                "end_to_end_cpu_ms_per_click": round(e2e_cost["total"], 3),
                "end_to_end_cpu_ms_per_click_by_process": e2e_cost,
                "end_to_end_cpu_ratio": round(e2e_ratio, 2),
                "end_to_end_clicks": e2e_clicks,
                "rps": round(sustained),
                "reference_rps": round(bare["rps"]),
                "ratio": round(ratio, 2),
                "burst_rps": round(peak["rps"]),
                "burst_ratio": round(burst_ratio, 2),
                "publish_drain_s": round(drain, 2),
                "click_commit_ms": round(commits["seconds"] / max(commits["batches"], 1) * 1000, 2)
                if commits
                else None,
                "p50_ms": round(peak["p50_ms"], 2),
                "p99_ms": round(peak["p99_ms"], 2),
                "reference_p50_ms": round(bare["p50_ms"], 2),
                "reference_p99_ms": round(bare["p99_ms"], 2),
                "half_load_rps": round(half["rps"]),
                "half_load_p50_ms": half["p50_ms"],
                "half_load_p99_ms": half["p99_ms"],
                "half_load_slow_at_s": half.get("slow_over_50ms_at_s"),
                "reference_half_load_p99_ms": bare_half["p99_ms"],
                "half_load_handler_over_pct": half_served,
                "half_load_commits_over_pct": half_commits,
                "cpu_ms_per_redirect": link_cost,
                "reference_cpu_ms_per_request": bare_cost,
                "redirects_counted": counted,
                "clicks_recorded": clicks,
                "click_events_on_kafka": len(ids),
                "exactly_once": exactly_once,
                "connections": connections,
                "duration_s": duration,
                "workers": workers,
                # The machine is shared: the 1-minute load average before and after the run.
                "pg_commit_p50_ms": pg_floor["commit_p50_ms"],
                "load_avg_1m": [round(load_before[0], 1), round(load_after[0], 1)],
                "quick": args.quick,
                "machine": cpu.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()

"""GET /v1/me latency under load (the refer-a-friend page's one call), beside a bare-ASGI
reference in the same run.

Starts, in one run, on this machine: Kafka and Postgres (devstack; KAFKA_BOOTSTRAP_SERVERS /
DATABASE_URL reuse running ones), link-service as a real process (`link-service serve`), a
program with ADVOCATES advocates, each with a read model as a busy advocate's (clicks, referrals
in every status, rewards in two units, redemptions), and one advocate token per advocate; and
the reference: a bare ASGI app on uvicorn answering a fixed JSON body of the same size
(bench/_common/bare_json.py). Both are driven over loopback by wrk (closed loop, fixed
connections, rotating the tokens); link-service then again in open loop at half its peak rate
for the p99 the goal names (latency from each request's scheduled time; the redirect bench's
load generator, in its own process).

Goal (issue #18): GET /v1/me p99 < 20 ms. The machine has 2 cores shared by the service,
Postgres, Kafka and the load generator, so absolute figures are modest; the ratio to the bare
app is what compares.

Usage: uv run --frozen python bench/advocate.py [--quick] [--connections 16] [--profile out.json]
Last line: one JSON object {"bench": "advocate", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from _common import cpu

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from redirect import ensure_wrk, run_wrk, wait_http  # noqa: E402

ADVOCATES = 100
REFERRALS = 30
CLICKS = 200


def wrk(
    binary: str, port: int, tokens: list[str], duration: float, connections: int
) -> dict[str, Any]:
    """Closed-loop peak with wrk, each request with the next advocate's token."""
    lua_tokens = ", ".join(json.dumps(t) for t in tokens)
    raw = run_wrk(
        binary,
        port,
        f"""
local tokens = {{{lua_tokens}}}
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/v1/me", {{["Authorization"] = "Bearer " .. tokens[i]}})
end
""",
        duration,
        connections,
    )
    return {
        "requests": raw["requests"],
        "non_2xx": raw["status_errors"],
        "errors": raw["errors"],
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


def open_loop(port: int, tokens: list[str], rate: float, duration: float) -> dict[str, Any]:
    """Requests at a fixed rate whatever the answers' pace, latency from each request's
    scheduled time (no coordinated omission), by the redirect bench's load generator in its own
    process (bench/_common/redirect_loadgen.py: an in-process httpx client cost more CPU per
    request than the page, taken from the service it measured), rotating the tokens."""
    with tempfile.TemporaryDirectory() as tmp:
        paths, bearers = Path(tmp) / "paths", Path(tmp) / "tokens"
        paths.write_text("/v1/me\n")
        bearers.write_text("\n".join(tokens) + "\n")
        out = subprocess.run(  # noqa: S603
            [
                sys.executable,
                str(HERE / "_common" / "redirect_loadgen.py"),
                "--port",
                str(port),
                "--paths",
                str(paths),
                "--bearer-file",
                str(bearers),
                "--rate",
                str(rate),
                "--duration",
                str(duration),
                "--connections",
                "64",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    raw: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return {
        "rate": round(rate, 1),
        "requests": raw["requests"],
        "failures": raw["errors"] + sum(n for s, n in raw["statuses"].items() if s != "200"),
        "p50_ms": raw["p50_ms"],
        "p99_ms": raw["p99_ms"],
    }


async def fill_read_model(database_url: str, advocates: list[dict[str, Any]]) -> None:
    """Each advocate as a busy one: clicks, referrals in every status, rewards, redemptions."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET search_path TO link")
        for a in advocates:
            adv, pid = a["id"], a["program_id"]
            await conn.execute(
                """
                INSERT INTO clicks (id, tenant_id, code, program_id, advocate_id, clicked_at,
                                    counts)
                SELECT 'clk_' || $1 || g, 'bench', $2, $3, $1, now(), g % 5 <> 0
                FROM generate_series(1, $4) g
                """,
                adv,
                a["code"],
                pid,
                CLICKS,
            )
            await conn.execute(
                """
                INSERT INTO portal_referrals (referral_id, tenant_id, advocate_id, friend_label,
                    signed_up, purchased, rewarded, refunded, created_at)
                SELECT 'ref_' || $1 || g, 'bench', $1, 'f•••@e•••.com', true, g % 2 = 0,
                       g % 3 = 0, g % 7 = 0, now() - g * interval '1 hour'
                FROM generate_series(1, $2) g
                """,
                adv,
                REFERRALS,
            )
            await conn.execute(
                """
                INSERT INTO portal_rewards (reward_id, advocate_id, conversion_id, unit, amount,
                                            state)
                SELECT 'rwd_' || $1 || g, $1, 'cnv_' || $1 || g,
                       CASE WHEN g % 2 = 0 THEN 'USD' ELSE 'POINTS' END, 1000,
                       CASE WHEN g % 3 = 0 THEN 'pending' ELSE 'available' END
                FROM generate_series(1, $2 / 3) g
                """,
                adv,
                REFERRALS,
            )
            await conn.execute(
                "INSERT INTO portal_redemptions VALUES ('rdm_' || $1, $1, 'USD', 500)", adv
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a sanity check)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--profile",
        type=Path,
        help="also sample link-service with py-spy during the peak run (speedscope JSON here)",
    )
    args = parser.parse_args()
    duration = 2.0 if args.quick else 15.0
    warm_s = 1 if args.quick else 2
    connections = min(max(args.connections, 1), 256)

    from devstack import services
    from devstack.kafka import KafkaBroker
    from devstack.paths import free_port
    from devstack.postgres import create_database, start_embedded

    wrk_bin = ensure_wrk()
    state = Path(tempfile.mkdtemp(prefix="bench-advocate-"))
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
        key = "rk_bench_" + secrets.token_urlsafe(16)
        cfg = services.StackConfig(
            database_url=database_url,
            kafka_bootstrap_servers=bootstrap,
            api_keys=[
                {"tenant_id": "bench", "key_sha256": hashlib.sha256(key.encode()).hexdigest()}
            ],
            topic_prefix=f"bench{secrets.token_hex(3)}.",
            fixed_ports=False,
            log_dir=state / "logs",
            extra_env={"LOG_LEVEL": "WARNING"},
        )
        link = (services.SERVICES[0],)
        services.migrate(cfg, link)
        running = services.start(cfg, link)
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
                    "bare_json:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(bare_port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    "--lifespan",
                    "off",
                ]
            )
        )
        wait_http(f"http://127.0.0.1:{bare_port}/")

        with httpx.Client(
            base_url=running[0].url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as api:
            program = api.post(
                "/v1/programs", json={"name": "Bench", "landing_url": "https://shop.example.com"}
            ).json()
            advocates = [
                api.post(
                    f"/v1/programs/{program['id']}/advocates", json={"customer_id": f"c{i}"}
                ).json()
                for i in range(ADVOCATES // 4 if args.quick else ADVOCATES)
            ]
            tokens = [
                api.post(f"/v1/advocates/{a['id']}/tokens", json={"ttl_seconds": 86_400}).json()[
                    "token"
                ]
                for a in advocates
            ]
        asyncio.run(fill_read_model(database_url, advocates))
        check = httpx.get(
            f"{running[0].url}/v1/me", headers={"Authorization": f"Bearer {tokens[0]}"}
        )
        assert check.status_code == 200, check.text
        me = check.json()
        assert len(me["referrals"]) == REFERRALS and me["stats"]["clicks"] > 0, me

        # CPU per request of every part (link-service, Postgres, Kafka, wrk), beside the bare
        # app's with the same client (bench/_common/cpu.py)
        pg_dir = asyncio.run(cpu.postgres_dir(database_url))
        link_cpu = cpu.Meter.stack(
            pg_dir, bootstrap, client_name="load_generator", children_only=True,
            service=running[0].process.pid,
        )  # fmt: skip
        bare_cpu = cpu.Meter.of(
            client_name="load_generator", children_only=True, service=procs[0].pid
        )
        wrk(wrk_bin, link_port, tokens, warm_s, connections)  # warm-up: pools, statements
        wrk(wrk_bin, bare_port, tokens, warm_s, connections)
        before = bare_cpu.snapshot()
        bare = wrk(wrk_bin, bare_port, tokens, duration, connections)
        bare_cost = cpu.per_op(before, bare_cpu.snapshot(), int(bare["requests"]))
        profiler = None
        if args.profile is not None:
            profiler = subprocess.Popen(  # noqa: S603
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(running[0].process.pid),
                    "--duration",
                    str(int(duration)),
                    "--format",
                    "speedscope",
                    "--output",
                    str(args.profile),
                    "--nonblocking",
                ]
            )
        before = link_cpu.snapshot()
        peak = wrk(wrk_bin, link_port, tokens, duration, connections)
        if profiler is not None:
            profiler.wait(timeout=60)
        me_cost = cpu.per_op(before, link_cpu.snapshot(), int(peak["requests"]))
        half = open_loop(link_port, tokens, max(peak["rps"] / 2, 20.0), duration)
        result = {
            "bench": "advocate",
            "quick": args.quick,
            "connections": connections,
            "duration_s": duration,
            "body_bytes": len(check.content),
            "bare_asgi": bare,
            "me_peak": peak,
            "me_half_load": half,
            "rps_vs_bare": round(peak["rps"] / bare["rps"], 3) if bare["rps"] else None,
            "cpu_ms_per_op": me_cost["total"],
            "reference_cpu_ms_per_op": bare_cost["total"],
            "cpu_ratio": round(me_cost["total"] / bare_cost["total"], 2)
            if bare_cost["total"]
            else None,
            "cpu_ms_per_op_by_process": me_cost,
            "reference_cpu_ms_per_op_by_process": bare_cost,
            # flat copies for bench/results.json's table (bench/render_table.py)
            "rps": peak["rps"],
            "reference_rps": bare["rps"],
            "p99_ms": peak["p99_ms"],
            "reference_p99_ms": bare["p99_ms"],
            "half_load_p99_ms": half["p99_ms"],
            "p99_goal_ms": 20,
            "p99_ok": half["p99_ms"] < 20,
            "load_avg": os.getloadavg(),
        }
        print(json.dumps(result), flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        if running:
            services.stop(running)
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Run every bench and write bench/results.json (issue #24): `make bench` (`ARGS=--quick`, or
`make bench-quick`, for the short CI profile).

Starts one Kafka broker and one Postgres (devstack) and hands them to the benches that take
running ones (KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL; each uses its own topic prefix and
scratch database), so the quick profile does not pay a JVM start per bench; the benches find
those processes on this machine and count their CPU as before. Each bench runs as its own
process; its human-readable lines pass through, its last JSON line is its figures.

bench/results.json holds one object per bench: its figures, plus `date` (UTC), `machine`
(cores, memory, CPU model), `load_avg_1m` before and after it, `seconds` and `ok`. The exit
status is non-zero only when a bench failed (crashed, timed out or printed no figures), never
because of a figure: the goals are read from the table, not enforced here.

Usage: uv run --frozen python bench/run_all.py [--quick] [--only redirect,ledger] [--out PATH]
(full runs: time_to_reward twice, at its default 200/s and at half of conversions_per_s)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import cpu

HERE = Path(__file__).resolve().parent
# in this order; a bench script that is not there is skipped
BENCHES = (
    "redirect",
    "conversions",
    "webhooks",
    "ledger",
    "time_to_reward",
    "advocate",
    "analytics",
)
TIMEOUT_S = {"quick": 240, "full": 1800}


def run_one(
    name: str, quick: bool, env: dict[str, str], extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    script = HERE / f"{name}.py"
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    entry: dict[str, Any] = {"bench": name}
    try:
        proc = subprocess.run(  # noqa: S603
            [sys.executable, str(script), *(["--quick"] if quick else []), *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S["quick" if quick else "full"],
            check=False,
        )
        out = proc.stdout
        sys.stdout.write(out)
        figures = None
        for line in reversed(out.strip().splitlines()):
            if line.startswith("{"):
                figures = json.loads(line)
                break
        if proc.returncode != 0 or figures is None:
            entry["ok"] = False
            entry["error"] = f"exit status {proc.returncode}; " + proc.stderr.strip()[-2000:]
            sys.stderr.write(proc.stderr[-4000:])
        else:
            entry.update(figures)
            entry["ok"] = True
    except subprocess.TimeoutExpired:
        entry["ok"] = False
        entry["error"] = f"timed out after {TIMEOUT_S['quick' if quick else 'full']} s"
    entry.update(
        date=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        machine={k: v for k, v in cpu.machine().items() if k != "load_avg_1m"},
        load_avg_1m=[round(load_before, 1), round(os.getloadavg()[0], 1)],
        seconds=round(time.monotonic() - started, 1),
        quick=quick,
    )
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short CI profile")
    parser.add_argument("--only", help="comma-separated bench names (default: all)")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    names = [n for n in (args.only.split(",") if args.only else BENCHES) if n]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown bench {unknown}; known: {', '.join(BENCHES)}")
    names = [n for n in names if (HERE / f"{n}.py").exists()]

    from devstack.kafka import KafkaBroker
    from devstack.postgres import start_embedded

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="bench-all-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    broker = pg = None
    results: list[dict[str, Any]] = []
    try:
        if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
            broker = KafkaBroker(root / "kafka", heap="512m")
            broker.start()
            env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        if not env.get("DATABASE_URL"):
            pg, env["DATABASE_URL"] = start_embedded(root / "pg")
        for name in names:
            print(f"== bench/{name}.py{' --quick' if args.quick else ''}", flush=True)
            runs: list[tuple[str, ...]] = [()]
            conversions = [r for r in results if r["bench"] == "conversions" and r["ok"]]
            if name == "time_to_reward" and not args.quick and conversions:
                # the issue's two rates: the default (200/s) and half of conversions' saturation
                runs.append(("--rate", str(round(conversions[0]["conversions_per_s"] / 2))))
            for extra in runs:
                entry = run_one(name, args.quick, env, extra)
                results.append(entry)
                print(
                    f"== {' '.join((name, *extra))}: {'ok' if entry['ok'] else 'FAILED'} in "
                    f"{entry['seconds']} s",
                    flush=True,
                )
    finally:
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    failed = [r["bench"] for r in results if not r["ok"]]
    print(
        f"wrote {args.out} ({len(results)} benches, {time.monotonic() - started:.0f} s in all)"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

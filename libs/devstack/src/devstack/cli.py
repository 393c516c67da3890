"""`devstack up`: Kafka, Postgres, migrations and the four services on this machine, in the
foreground until Ctrl-C. `devstack kafka`: only the broker (for running services by hand)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from devstack import services
from devstack.kafka import KafkaBroker
from devstack.postgres import create_database, start_embedded


def _dev_api_key(state: Path) -> tuple[str, str]:
    """A stable local key, kept in .devstack so a restart keeps working with the same key."""
    import hashlib
    import secrets

    path = state / "dev-api-key"
    if not path.exists():
        path.write_text("rk_dev_" + secrets.token_urlsafe(24))
    key = path.read_text().strip()
    return key, hashlib.sha256(key.encode()).hexdigest()


def up(state: Path) -> int:
    state.mkdir(parents=True, exist_ok=True)
    broker: KafkaBroker | None = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = KafkaBroker(state / "kafka", port=int(os.environ.get("KAFKA_PORT", "19092")))
        print(f"starting Kafka {broker.bootstrap_servers} ...", flush=True)
        broker.start()
        bootstrap = broker.bootstrap_servers
    admin_dsn = os.environ.get("DATABASE_URL")
    pg = None
    if not admin_dsn:
        pg, admin_dsn = start_embedded(state / "postgres")
    database_url = asyncio.run(create_database(admin_dsn, "referral"))
    key, digest = _dev_api_key(state)
    cfg = services.StackConfig(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        api_keys=[{"tenant_id": "dev", "key_sha256": digest, "name": "devstack"}],
        log_dir=state / "logs",
    )
    services.migrate(cfg)
    running = services.start(cfg)
    stopping = False

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        services.wait_ready(running)
        print("\nreferral platform is up:")
        print(f"  kafka      {bootstrap}")
        print(f"  postgres   {database_url}")
        for svc in running:
            print(f"  {svc.definition.name:<21} {svc.url}   (docs: {svc.url}/docs)")
        print(f"  API key    {key}   (tenant 'dev'; send as 'Authorization: Bearer <key>')")
        print(f"  logs       {state / 'logs'}\nCtrl-C stops everything.", flush=True)
        while not stopping:
            signal.pause()
            if any(s.process.poll() is not None for s in running):
                print("a service exited; see the logs", file=sys.stderr)
                return 1
    finally:
        services.stop(running)
        if broker is not None:
            broker.stop()
        del pg
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start Kafka, Postgres and the four services")
    sub.add_parser("kafka", help="start only a Kafka broker")
    parser.add_argument("--state", type=Path, default=Path(".devstack"))
    args = parser.parse_args()
    if args.command == "up":
        sys.exit(up(args.state))
    broker = KafkaBroker(args.state / "kafka", port=int(os.environ.get("KAFKA_PORT", "19092")))
    broker.start()
    print(f"kafka listening on {broker.bootstrap_servers}; Ctrl-C stops it", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()

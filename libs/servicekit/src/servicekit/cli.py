"""The command line every service shares: `<service> serve`, `<service> migrate` and
`<service> replay-dlq`."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from servicekit import migrations
from servicekit.runtime import ServiceSpec
from servicekit.settings import ServiceSettings
from servicekit.telemetry import configure_logging

S = TypeVar("S", bound=ServiceSettings)


def run_cli(
    spec: ServiceSpec,
    settings_type: type[S],
    app_factory: Callable[[S], FastAPI],
    argv: Sequence[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=spec.name)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP API, outbox relay and consumers")
    mig = sub.add_parser("migrate", help="apply this service's database migrations")
    mig.add_argument("--revision", default="head")
    replay = sub.add_parser(
        "replay-dlq",
        help="hand this service's dead letters back to its consumers (after fixing the cause)",
    )
    replay.add_argument(
        "--group",
        action="append",
        dest="groups",
        help="only this consumer group (repeatable; default: all of the service's)",
    )
    replay.add_argument("--dry-run", action="store_true", help="count, change nothing")
    args = parser.parse_args(argv)

    settings = settings_type()
    configure_logging(spec.name, settings.log_level, settings.log_json)
    if args.command == "migrate":
        migrations.upgrade(settings.database_url, spec.schema, spec.package, args.revision)
        return
    if args.command == "replay-dlq":
        from servicekit.replay import replay_dead_letters

        summary = asyncio.run(
            replay_dead_letters(spec, settings, groups=args.groups, dry_run=args.dry_run)
        )
        print(f"{spec.name} replay-dlq: {summary.describe()}")
        return
    uvicorn.run(
        app_factory(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        access_log=False,
    )

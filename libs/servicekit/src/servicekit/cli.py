"""The command line every service shares: `<service> serve`, `<service> migrate`,
`<service> replay-dlq`, and the service's own commands (`ServiceSpec.commands`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import asyncpg
import uvicorn
from fastapi import FastAPI

from referral_events.outbox import release_parked
from servicekit import migrations
from servicekit.db import one_connection
from servicekit.runtime import Runtime, ServiceSpec
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
    sub.add_parser(
        "outbox-release",
        help="give outbox rows the broker kept refusing back to the relay (after fixing the cause)",
    )
    for command in spec.commands:
        command.arguments(sub.add_parser(command.name, help=command.help))
    args = parser.parse_args(argv)

    settings = settings_type()
    configure_logging(spec.name, settings.log_level, settings.log_json)
    for command in spec.commands:
        if args.command == command.name:
            sys.exit(command.run(args, settings))
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
    app = app_factory(settings)
    runtime: Runtime = app.state.runtime
    runtime.freeze_after_start = True
    if args.command == "outbox-release":
        released = asyncio.run(_release_parked(spec, settings))
        print(f"{spec.name} outbox-release: {released} parked row(s) given back to the relay")
        return
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        access_log=False,
    )


def command_connection(
    spec: ServiceSpec, settings: ServiceSettings, command: str
) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """A connection on the service's schema for `<service> COMMAND`, named after both."""
    return one_connection(
        settings.database_url,
        schema=spec.schema,
        application_name=f"{spec.name}-{command}",
        server_settings=settings.db_role_settings(),
    )


async def _release_parked(spec: ServiceSpec, settings: ServiceSettings) -> int:
    async with command_connection(spec, settings, "outbox-release") as conn:
        return await release_parked(conn)

from __future__ import annotations

import argparse
import asyncio
import json

from fastapi import FastAPI

from reward_service import api, domain, handlers
from reward_service.config import Settings
from reward_service.consumers import consumers
from reward_service.events import SERVICE
from reward_service.workers import RewardReleaser
from servicekit.app import create_service_app
from servicekit.cli import run_cli
from servicekit.db import create_pool
from servicekit.runtime import Command, Runtime, ServiceSpec, Worker
from servicekit.settings import ServiceSettings


async def verify_ledger(settings: Settings, tenant_id: str | None = None) -> handlers.VerifyReport:
    pool = await create_pool(
        settings.database_url,
        schema=SPEC.schema,
        application_name=f"{SPEC.name}-verify",
        min_size=1,
        max_size=1,
    )
    try:
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            return await handlers.verify(conn, tenant_id)
    finally:
        await pool.close()


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", help="only this tenant's books (default: all)")


def _verify(args: argparse.Namespace, settings: ServiceSettings) -> int:
    """Checks the ledger and prints the report as JSON; exit 1 when unsound."""
    assert isinstance(settings, Settings)
    report = asyncio.run(verify_ledger(settings, args.tenant))
    print(json.dumps(report.as_dict(), indent=2, default=str))
    return 0 if report.ok else 1


VERIFY = Command(
    name="verify",
    help="check the ledger: every unit sums to zero, balances equal their entries",
    run=_verify,
    arguments=_verify_arguments,
)


def build_spec(clock: domain.Clock = domain.utc_now) -> ServiceSpec:
    def workers(rt: Runtime) -> list[Worker]:
        s = rt.settings
        assert isinstance(s, Settings)
        return [
            RewardReleaser(
                rt,
                interval=s.release_poll_interval_seconds,
                batch_size=s.release_batch_size,
                clock=clock,
            )
        ]

    return ServiceSpec(
        name=SERVICE,
        schema="reward",
        package="reward_service",
        consumers=consumers(clock),
        workers=workers,
        commands=[VERIFY],
    )


SPEC = build_spec()


def create_app(settings: Settings | None = None, clock: domain.Clock = domain.utc_now) -> FastAPI:
    """`clock` is the one source of "now" for rule versions, handlers and releases."""
    app = create_service_app(build_spec(clock), settings or Settings(), [api.router])
    app.state.clock = clock
    return app


def main() -> None:
    run_cli(SPEC, Settings, create_app)


if __name__ == "__main__":
    main()

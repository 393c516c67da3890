from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence

from fastapi import FastAPI

from reward_service import api, domain, handlers
from reward_service.config import Settings
from reward_service.consumers import consumers
from reward_service.workers import RewardReleaser
from servicekit.app import create_service_app
from servicekit.cli import run_cli
from servicekit.db import create_pool
from servicekit.runtime import Runtime, ServiceSpec, Worker


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
        name="reward-service",
        schema="reward",
        package="reward_service",
        consumers=consumers(clock),
        workers=workers,
    )


SPEC = build_spec()


def create_app(settings: Settings | None = None, clock: domain.Clock = domain.utc_now) -> FastAPI:
    """`clock` is the one source of "now" for rule versions, handlers and releases."""
    app = create_service_app(build_spec(clock), settings or Settings(), [api.router])
    app.state.clock = clock
    return app


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


def main(argv: Sequence[str] | None = None) -> None:
    """`reward-service verify [--tenant T]` checks the ledger (exit 1 when unsound) and prints
    the report as JSON; every other command is servicekit's (serve, migrate)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["verify"]:
        tenant = args[args.index("--tenant") + 1] if "--tenant" in args else None
        report = asyncio.run(verify_ledger(Settings(), tenant))
        print(json.dumps(report.as_dict(), indent=2, default=str))
        sys.exit(0 if report.ok else 1)
    run_cli(SPEC, Settings, create_app, args)


if __name__ == "__main__":
    main()

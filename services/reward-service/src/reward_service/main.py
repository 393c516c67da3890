from __future__ import annotations

import argparse
import asyncio
import json

from fastapi import FastAPI

from reward_service.clock import Clock, ControllableClock, utc_now
from reward_service.config import Settings
from reward_service.consumers import consumers
from reward_service.coupons import api as coupons
from reward_service.devclock import api as devclock
from reward_service.events import EVENTS, SERVICE
from reward_service.ledger import api as ledger
from reward_service.ledger import domain as ledger_domain
from reward_service.ledger import handlers as ledger_handlers
from reward_service.payouts import api as payouts
from reward_service.rewards import api as rewards
from reward_service.rules import api as rules
from reward_service.workers import RewardReleaser
from servicekit.app import create_service_app
from servicekit.cli import command_connection, run_cli
from servicekit.keys import key_consumer, usage_events
from servicekit.runtime import Command, Runtime, ServiceSpec, Worker
from servicekit.settings import (
    ServiceSettings,
    privacy_key_default,
    refuse_dev_defaults,
    refuse_dev_only,
)


async def verify_ledger(
    settings: Settings, tenant_id: str | None = None
) -> ledger_domain.VerifyReport:
    async with (
        command_connection(SPEC, settings, "verify") as conn,
        conn.transaction(isolation="repeatable_read"),
    ):
        return await ledger_handlers.verify(conn, tenant_id)


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


def build_spec(clock: Clock = utc_now) -> ServiceSpec:
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
        key_copy=key_consumer(SERVICE),
        key_usage=usage_events(EVENTS),
        workers=workers,
        # Pooled connections run transactions only (no session locks, cursors, LISTEN or SET):
        # no session reset per release, and no set_config per acquire for the same tenant.
        pool_reset_session=False,
        commands=[VERIFY],
    )


SPEC = build_spec()


ROUTERS = [
    rules.router,
    ledger.router,
    payouts.router,
    coupons.router,
    rewards.router,
    devclock.router,
]


def create_app(settings: Settings | None = None, clock: Clock = utc_now) -> FastAPI:
    """`clock` is the one source of "now" for rule versions, handlers and releases; with
    DEV_CLOCK_CONTROL (dev only) it is wrapped in one that POST /v1/dev/clock/advance moves."""
    settings = settings or Settings()
    refuse_dev_only(settings, {"DEV_CLOCK_CONTROL": settings.dev_clock_control})
    refuse_dev_defaults(settings, privacy_key_default(settings))
    if settings.dev_clock_control:
        clock = ControllableClock(clock)
    app = create_service_app(build_spec(clock), settings, ROUTERS)
    app.state.clock = clock
    return app


def main() -> None:
    run_cli(SPEC, Settings, create_app)


if __name__ == "__main__":
    main()

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from attribution_service import api
from attribution_service.config import Settings
from attribution_service.consumers import CONSUMERS
from attribution_service.conversion_batch import ConversionWriter
from attribution_service.workers import PendingSweeper
from servicekit.app import create_service_app
from servicekit.cli import run_cli
from servicekit.runtime import Runtime, ServiceSpec, Worker


def _workers(rt: Runtime) -> list[Worker]:
    s = rt.settings
    assert isinstance(s, Settings)
    workers: list[Worker] = [
        PendingSweeper(rt, s.evidence_grace_seconds, s.pending_sweep_interval_seconds)
    ]
    if s.conversion_writers:
        workers.append(
            ConversionWriter(
                rt,
                writers=s.conversion_writers,
                batch_max=s.conversion_batch_max,
                grace=timedelta(seconds=s.evidence_grace_seconds),
            )
        )
    return workers


SPEC = ServiceSpec(
    name="attribution-service",
    schema="attribution",
    package="attribution_service",
    consumers=CONSUMERS,
    workers=_workers,
    # Pooled connections run transactions only (no session locks, cursors, LISTEN or SET).
    pool_reset_session=False,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings or Settings(), [api.router])


def main() -> None:
    run_cli(SPEC, Settings, create_app)


if __name__ == "__main__":
    main()

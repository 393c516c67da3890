from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from attribution_service.analytics import api as analytics
from attribution_service.commerce import api as commerce
from attribution_service.commerce import secrets as commerce_secrets
from attribution_service.config import DEV_IP_HASH_KEY, Settings
from attribution_service.consumers import CONSUMERS
from attribution_service.conversions import api as conversions
from attribution_service.conversions.batch import ConversionWriter
from attribution_service.conversions.front import ConversionsFront
from attribution_service.events import EVENTS, SERVICE
from attribution_service.experiments import api as experiments
from attribution_service.programs import api as programs
from attribution_service.refunds import api as refunds
from attribution_service.retention import handlers as retention
from attribution_service.reviews import api as reviews
from attribution_service.workers import AnalyticsFolder, PendingSweeper
from servicekit.app import create_service_app
from servicekit.cli import run_cli
from servicekit.keys import key_consumer, usage_events
from servicekit.retention import Pruner
from servicekit.runtime import Runtime, ServiceSpec, Worker
from servicekit.secretbox import DEV_SECRETS_KEY, Resealer
from servicekit.settings import privacy_key_default, refuse_dev_defaults


def _workers(rt: Runtime) -> list[Worker]:
    s = rt.settings
    assert isinstance(s, Settings)
    workers: list[Worker] = [
        PendingSweeper(rt, s.evidence_grace_seconds, s.pending_sweep_interval_seconds),
        AnalyticsFolder(rt, s.analytics_fold_interval_seconds, s.analytics_fold_batch),
        Resealer(rt, s.secret_box(), commerce_secrets.SEALED),
        Pruner(
            rt,
            retention.STEPS,
            batch=s.retention_batch_size,
            interval=s.retention_interval_seconds,
        ),
    ]
    if s.conversion_writers:
        workers.append(
            ConversionWriter(
                rt,
                writers=s.conversion_writers,
                batch_max=s.conversion_batch_max,
                grace=timedelta(seconds=s.evidence_grace_seconds),
                linger=s.conversion_batch_linger_seconds,
            )
        )
    return workers


SPEC = ServiceSpec(
    name=SERVICE,
    schema="attribution",
    package="attribution_service",
    consumers=CONSUMERS,
    key_copy=key_consumer(SERVICE),
    key_usage=usage_events(EVENTS),
    workers=_workers,
    # Pooled connections run transactions only (no session locks, cursors, LISTEN or SET).
    pool_reset_session=False,
    # The evidence and screening reads are correlated subqueries over conversions. Postgres
    # switches a prepared statement to a generic plan after five runs, planned with the table
    # sizes of that moment: on a young table, sequential scans that stay cached as the table
    # grows (measured: 4x the Postgres CPU per conversion after a few thousand). Custom plans
    # cost a planning per run, and follow the table's size and statistics. The group commit's
    # statements are the exception (repository.BATCH_PLAN_SETTINGS).
    pool_server_settings={"plan_cache_mode": "force_custom_plan"},
)


# in the order FastAPI matches them (and lists them in the OpenAPI document)
ROUTERS = [
    m.router for m in (conversions, refunds, programs, reviews, commerce, analytics, experiments)
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    refuse_dev_defaults(
        settings,
        {
            "IP_HASH_KEY": (settings.ip_hash_key, DEV_IP_HASH_KEY),
            "SECRETS_KEY": (settings.secrets_key, DEV_SECRETS_KEY),
            **privacy_key_default(settings),
        },
    )
    app = create_service_app(SPEC, settings, ROUTERS)
    # POST /v1/conversions is answered in front of FastAPI; everything else goes on to it.
    registry = app.state.metrics.registry
    app.set_front(lambda fastapi: ConversionsFront(fastapi, app.state, registry))
    return app


def main() -> None:
    run_cli(SPEC, Settings, create_app)


if __name__ == "__main__":
    main()

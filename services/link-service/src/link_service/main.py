from __future__ import annotations

import dataclasses

from fastapi import FastAPI

from link_service import domain
from link_service.advocates import api as advocates_api
from link_service.audience import api as audience_api
from link_service.config import DEV_IP_HASH_KEY, Settings
from link_service.consumers import CONSUMERS, consumers
from link_service.domain import Links
from link_service.enrollment import api as enrollment_api
from link_service.enrollment import cli
from link_service.enrollment.worker import EnrollmentWorker
from link_service.events import SERVICE
from link_service.portal import api as portal_api
from link_service.portal.domain import VerifiedTokens
from link_service.portal.front import MeFront, PageReads
from link_service.portal.reminders import ReminderWorker
from link_service.privacy import api as privacy_api
from link_service.programs import api as programs_api
from link_service.redirect import api
from link_service.redirect.front import RedirectMiddleware
from link_service.redirect.state import LinkState
from link_service.redirect.workers import CacheInvalidator, ClickWriter
from link_service.retention import handlers as retention
from link_service.workspaces import api as workspaces_api
from link_service.workspaces import cli as keys_cli
from link_service.workspaces.usage import KeyUsage
from servicekit.app import create_service_app
from servicekit.cli import run_cli
from servicekit.retention import Pruner
from servicekit.runtime import Runtime, ServiceSpec, Worker
from servicekit.settings import privacy_key_default, refuse_dev_defaults

SPEC = ServiceSpec(
    name=SERVICE,
    schema="link",
    package="link_service",
    consumers=CONSUMERS,
    # Pooled connections run transactions only (no session locks, cursors, LISTEN or SET):
    # no session reset per release, and no set_config per acquire for the same tenant.
    pool_reset_session=False,
    commands=[cli.ENROLL_BULK, keys_cli.KEYS],
)

_WARM_UP_USER_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    refuse_dev_defaults(
        settings,
        {"IP_HASH_KEY": (settings.ip_hash_key, DEV_IP_HASH_KEY), **privacy_key_default(settings)},
    )
    state = LinkState(settings)

    def workers(rt: Runtime) -> list[Worker]:
        state.rt = rt
        state.writer = ClickWriter(rt, settings, state.registry)
        state.invalidator = CacheInvalidator(rt, state.cache)
        state.enrollment = EnrollmentWorker(rt, settings)
        reminders = ReminderWorker(rt, settings)
        # The user-agent parsers load their regex tables on first use: now, not in the
        # first redirect (and before servicekit freezes the start-up heap).
        domain.classify_user_agent(_WARM_UP_USER_AGENT)
        usage = KeyUsage(rt, settings.key_usage_flush_seconds)
        app.state.authenticator.on_use = usage.note
        pruner = Pruner(
            rt,
            retention.steps(settings.click_retention_days),
            batch=settings.retention_batch_size,
            interval=settings.retention_interval_seconds,
        )
        return [
            state.writer,
            state.invalidator,
            state.enrollment,
            reminders,
            usage,
            pruner,
            app.state.portal_reads,
        ]

    routers = [
        programs_api.router,
        audience_api.router,
        advocates_api.router,
        enrollment_api.router,
        portal_api.router,
        workspaces_api.router,
        privacy_api.router,
        api.router,
    ]
    spec = dataclasses.replace(
        SPEC, workers=workers, consumers=consumers(Links(settings.public_base_url))
    )
    app = create_service_app(spec, settings, routers)
    # The bulk upload has its own documented limit (its route refuses past it as it streams).
    app.limit_route_body("POST", enrollment_api.UPLOAD_PATH, settings.enrollment_max_upload_bytes)
    app.state.links = state
    app.state.advocate_tokens = VerifiedTokens(settings.advocate_token_keys)
    app.state.portal_reads = PageReads(app.state.runtime, settings.portal_db_pool_size)
    state.registry = app.state.metrics.registry
    # GET /v1/me and /r/... are answered before FastAPI's own per-request work, routing or
    # dependency injection runs; everything else goes on to FastAPI unchanged.
    app.set_front(
        lambda fastapi: MeFront(
            fastapi,
            RedirectMiddleware(fastapi, state, state.registry),
            app.state.advocate_tokens,
            app.state.portal_reads,
            state.registry,
        )
    )
    return app


def main() -> None:
    run_cli(SPEC, Settings, create_app)


if __name__ == "__main__":
    main()

from __future__ import annotations

from dataclasses import replace

import httpx
from fastapi import FastAPI

from notification_service.clock import Clock, utc_now
from notification_service.config import DEV_UNSUBSCRIBE_KEY, Settings
from notification_service.consumers import CONSUMERS
from notification_service.email import api as email_api
from notification_service.email.mailer import EmailSender
from notification_service.events import EVENTS, SERVICE
from notification_service.retention import handlers as retention
from notification_service.webhooks import api as webhooks_api
from notification_service.webhooks import repository as webhooks_repository
from notification_service.webhooks import urlguard
from notification_service.webhooks.dispatcher import Dispatcher
from servicekit.app import create_service_app
from servicekit.cli import run_cli
from servicekit.keys import key_consumer, usage_events
from servicekit.retention import Pruner
from servicekit.runtime import Runtime, ServiceSpec, Worker
from servicekit.secretbox import DEV_SECRETS_KEY, Resealer
from servicekit.settings import privacy_key_default, refuse_dev_defaults


def _workers(
    rt: Runtime,
    *,
    clock: Clock = utc_now,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: urlguard.Resolver = urlguard.system_resolver,
) -> list[Worker]:
    s = rt.settings
    assert isinstance(s, Settings)
    return [
        Dispatcher(rt, s, clock=clock, transport=transport, resolver=resolver),
        EmailSender(rt, s, clock=clock),
        Resealer(rt, s.secret_box(), webhooks_repository.SEALED),
        Pruner(
            rt,
            retention.steps(s.email_body_retention_days, s.webhook_body_retention_days),
            batch=s.retention_batch_size,
            interval=s.retention_interval_seconds,
            clock=clock,
        ),
    ]


SPEC = ServiceSpec(
    name=SERVICE,
    schema="notification",
    package="notification_service",
    consumers=CONSUMERS,
    key_copy=key_consumer(SERVICE),
    key_usage=usage_events(EVENTS),
    workers=_workers,
    # Pooled connections run transactions only (no session locks, cursors, LISTEN or SET; the
    # dispatcher LISTENs on a connection of its own): one round trip less per transaction.
    pool_reset_session=False,
)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    resolver: urlguard.Resolver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """`clock`, `resolver` and `transport` are for tests: time, DNS and the network as the
    dispatcher and the SSRF guard see them."""
    spec = SPEC
    if clock is not None or transport is not None or resolver is not None:
        spec = replace(
            SPEC,
            workers=lambda rt: _workers(
                rt,
                clock=clock or utc_now,
                transport=transport,
                resolver=resolver or urlguard.system_resolver,
            ),
        )
    settings = settings or Settings()
    key = settings.email_unsubscribe_key
    refuse_dev_defaults(
        settings,
        {
            "EMAIL_UNSUBSCRIBE_KEY": (key, DEV_UNSUBSCRIBE_KEY),
            "SECRETS_KEY": (settings.secrets_key, DEV_SECRETS_KEY),
            **privacy_key_default(settings),
        },
    )
    app = create_service_app(spec, settings, [webhooks_api.router, email_api.router])
    app.state.url_resolver = resolver or urlguard.system_resolver
    app.state.clock = clock or utc_now
    return app


def main() -> None:
    run_cli(SPEC, Settings, create_app)


if __name__ == "__main__":
    main()

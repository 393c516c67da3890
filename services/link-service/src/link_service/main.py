from __future__ import annotations

import dataclasses
import functools
import sys

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from link_service import api
from link_service.config import Settings
from link_service.consumers import CONSUMERS
from link_service.redirect import LinkState, RedirectMiddleware
from link_service.workers import CacheInvalidator, ClickWriter, EnrollmentWorker
from servicekit.app import ServiceApp, create_service_app
from servicekit.cli import run_cli
from servicekit.runtime import Runtime, ServiceSpec, Worker

SPEC = ServiceSpec(name="link-service", schema="link", package="link_service", consumers=CONSUMERS)


class LinkServiceApp(ServiceApp):
    """The service's FastAPI app, with the redirect as its front door (see create_app)."""

    front: RedirectMiddleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = LinkState(settings)

    def workers(rt: Runtime) -> list[Worker]:
        state.rt = rt
        state.writer = ClickWriter(rt, settings, state.registry)
        state.invalidator = CacheInvalidator(rt, state)
        state.enrollment = EnrollmentWorker(rt, settings)
        return [state.writer, state.invalidator, state.enrollment]

    app = create_service_app(
        dataclasses.replace(SPEC, workers=workers), settings, [api.router], LinkServiceApp
    )
    assert isinstance(app, LinkServiceApp)
    app.state.links = state
    registry = getattr(getattr(app.state, "metrics", None), "registry", None)
    state.registry = registry
    # In front of FastAPI itself: /r/... is answered before FastAPI's own per-request work
    # (its native telemetry wraps even the built middleware stack), routing or dependency
    # injection runs; everything else goes on to FastAPI unchanged.
    app.front = RedirectMiddleware(functools.partial(ServiceApp.__call__, app), state, registry)
    return app


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "enroll-bulk":
        from link_service.cli import enroll_bulk_main

        sys.exit(enroll_bulk_main(sys.argv[2:]))
    run_cli(SPEC, Settings, create_app)


if __name__ == "__main__":
    main()

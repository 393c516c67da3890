from __future__ import annotations

import dataclasses
import sys

from fastapi import FastAPI
from starlette.types import ASGIApp

from link_service import api
from link_service.config import Settings
from link_service.consumers import CONSUMERS
from link_service.redirect import LinkState, RedirectMiddleware
from link_service.workers import CacheInvalidator, ClickWriter, EnrollmentWorker
from servicekit.app import create_service_app
from servicekit.cli import run_cli
from servicekit.runtime import Runtime, ServiceSpec, Worker

SPEC = ServiceSpec(name="link-service", schema="link", package="link_service", consumers=CONSUMERS)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = LinkState(settings)

    def workers(rt: Runtime) -> list[Worker]:
        state.rt = rt
        state.writer = ClickWriter(rt, settings, state.registry)
        state.invalidator = CacheInvalidator(rt, state)
        state.enrollment = EnrollmentWorker(rt, settings)
        return [state.writer, state.invalidator, state.enrollment]

    app = create_service_app(dataclasses.replace(SPEC, workers=workers), settings, [api.router])
    app.state.links = state
    # Outermost, around the whole built stack (tracing included): /r/... is answered before
    # any of the API's middleware, routing or dependency injection runs.
    build_stack = app.build_middleware_stack
    registry = getattr(getattr(app.state, "metrics", None), "registry", None)
    state.registry = registry

    def build_middleware_stack() -> ASGIApp:
        return RedirectMiddleware(build_stack(), state, registry)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    return app


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "enroll-bulk":
        from link_service.cli import enroll_bulk_main

        sys.exit(enroll_bulk_main(sys.argv[2:]))
    run_cli(SPEC, Settings, create_app)


if __name__ == "__main__":
    main()

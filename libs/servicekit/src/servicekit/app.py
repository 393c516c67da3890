"""The FastAPI application every service is built from: lifespan-owned runtime, API-key auth,
problem+json errors, /healthz, /readyz, /metrics (Prometheus), OpenTelemetry instrumentation."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.auth import RATE_HEADERS, ApiKeyAuthenticator, public
from servicekit.bodylimit import BodyLimits, limit_body
from servicekit.db import act_for_all_tenants
from servicekit.front import FastAPIEntry
from servicekit.keys import KeyStore, KeyUsage
from servicekit.metrics import RouteIndexedMetricsMiddleware, ServiceMetrics
from servicekit.problems import install_problem_handlers
from servicekit.ratelimit import RateLimiter
from servicekit.runtime import Runtime, ServiceSpec, Worker
from servicekit.settings import ServiceSettings
from servicekit.telemetry import configure_tracing

PROBE = public("a probe: the kubelet has no key")
METRICS = public("scraped by Prometheus; NetworkPolicies admit only the monitoring namespace")


def runtime(request: Request) -> Runtime:
    """FastAPI dependency: the runtime of the app serving the request."""
    rt: Runtime = request.app.state.runtime
    return rt


class ServiceApp(FastAPI):
    """A FastAPI app whose request metrics wrap every other middleware, including ones a service
    adds after creating the app: each request is counted and timed, under its route template,
    however answered.

    A service's hot path may have a front door (`set_front`): a plain ASGI app that sees every
    request before FastAPI does and answers the ones it can (link-service's redirect,
    attribution-service's conversions), paying for none of FastAPI's per-request work (its
    native telemetry wraps even the built middleware stack); it applies what the route it
    stands in for declares and records the same request metrics and span (servicekit.front).
    The `front_door` setting off, FastAPI serves everything.

    In front of both, every request's body is bounded (`body_limits`, servicekit.bodylimit):
    413 before anything reads or parses a body over the route's limit."""

    front: ASGIApp | None = None
    body_limits: BodyLimits | None = None

    def limit_route_body(self, method: str, template: str, limit: int) -> None:
        """The route `method template` takes bodies up to `limit` bytes, not MAX_BODY_BYTES."""
        if self.body_limits is None:
            raise RuntimeError("the app has no body limits (create_service_app sets them)")
        self.body_limits.route(method, template, limit)

    def set_front(self, make: Callable[[FastAPIEntry], ASGIApp]) -> None:
        """`make` gets FastAPI's own entry point, to pass on what the front door leaves, and
        the app whose routes the front door stands in for."""
        settings = getattr(self.state, "settings", None)
        if isinstance(settings, ServiceSettings) and not settings.front_door:
            return
        self.front = make(FastAPIEntry(self))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._serve(scope, receive, send)
            return
        # One pass over the headers for what this layer needs.
        length: bytes | None = None
        streamed = keyed = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                streamed = True
            elif name == b"authorization" or name == b"x-api-key":
                keyed = True
        if keyed:
            send = _with_rate_headers(scope, send)
        if self.body_limits is not None:
            await limit_body(self.body_limits, self._serve, scope, receive, send, length, streamed)
        else:
            await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is not None:
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        metrics = [
            Middleware(cast(Any, RouteIndexedMetricsMiddleware), *m.args, **m.kwargs)
            for m in self.user_middleware
            if _is_metrics(m.cls)
        ]
        others = [m for m in self.user_middleware if not _is_metrics(m.cls)]
        self.user_middleware = metrics + others
        return super().build_middleware_stack()


def _with_rate_headers(scope: Scope, send: Send) -> Send:
    """`send` adding the RateLimit-* headers the authenticated key's bucket left in the scope
    (auth.Principal.note_rate) to whatever answers the request: a success, a refusal, an
    error alike. A 429 carries its own."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            rate = scope.get(RATE_HEADERS)
            if rate:
                message = {**message, "headers": [*message.get("headers", ()), *rate]}
        await send(message)

    return sending


def _plus(workers: Callable[[Runtime], list[Worker]], usage: KeyUsage) -> Callable[..., Any]:
    return lambda rt: [*workers(rt), usage]


def _is_metrics(cls: object) -> bool:
    return cls is PrometheusInstrumentatorMiddleware


def create_service_app(
    spec: ServiceSpec,
    settings: ServiceSettings,
    routers: Sequence[APIRouter],
) -> ServiceApp:
    configure_tracing(spec.name)
    rt = Runtime(spec, settings)
    usage: KeyUsage | None = None
    if spec.key_usage is not None:
        usage = KeyUsage(rt, spec.key_usage, settings.key_usage_flush_seconds)
        rt.spec = dataclasses.replace(spec, workers=_plus(spec.workers, usage))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Start-up (cache warm-ups) and every task it starts (consumers, relay, workers) act
        # across tenants: what they touch is named by their rows and events (servicekit.db).
        act_for_all_tenants()
        await rt.start()
        try:
            yield
        finally:
            await rt.stop()

    app = ServiceApp(title=spec.name, version=spec.version, lifespan=lifespan)
    app.state.runtime = rt
    app.state.settings = settings
    app.body_limits = BodyLimits(settings.max_body_bytes)
    app.state.authenticator = ApiKeyAuthenticator(
        settings.api_keys,
        KeyStore(lambda: rt.pool, settings.api_key_cache_ttl_seconds),
        RateLimiter(settings.rate_limit_plans),
    )
    if usage is not None:
        app.state.authenticator.on_use = usage.note
    metrics = ServiceMetrics(rt)
    app.state.metrics = metrics
    install_problem_handlers(app)

    @app.get("/healthz", include_in_schema=False, dependencies=[PROBE])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False, dependencies=[PROBE])
    async def readyz() -> JSONResponse:
        ok, checks = await rt.ready()
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status_code=200 if ok else 503,
        )

    # Unauthenticated like the probes: NetworkPolicies let only the monitoring namespace reach
    # the port, and nothing here is per tenant or personal.
    @app.get("/metrics", include_in_schema=False, dependencies=[METRICS])
    async def prometheus_metrics() -> Response:
        await metrics.refresh()
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    metrics.instrument(app)
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    return app

"""POST /v1/conversions in front of FastAPI: the hot path.

A plain ASGI app, the app's front door (servicekit.front), answers a well-formed conversion
itself, standing in for the route api.submit_conversion: it applies what that route declares
(the API key and its scopes, the Idempotency-Key header, the body model), opens the server
span and records the request metrics FastAPI's path would, and hands the conversion to the
group commit (conversions.batch.ConversionWriter) through the same code as the route
(api.submit). Per request that skips FastAPI's routing, dependency injection, response
re-validation and the middleware stack, which together cost more CPU than deciding the
conversion.

Anything else goes on to FastAPI unchanged, and so does every request the route would refuse
before its dependencies run (no or a bad API key, a key that cannot be looked up while the
database is away, a bad Idempotency-Key, a body that is not JSON or not a valid conversion):
FastAPI answers those exactly as it always has (the body read here is replayed to it).
Refusals by a scope or by the handler itself (403, 409, 422 naming the field) are the
problem+json documents the app's exception handlers write.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import Receive, Scope, Send

from attribution_service.conversions import api
from attribution_service.conversions.schemas import ConversionIn
from referral_events.database_errors import INFRASTRUCTURE_ERRORS
from servicekit.asgi import header_map, read_body, replay, send_json
from servicekit.auth import Principal
from servicekit.front import FastAPIEntry, FrontRoute, is_json
from servicekit.problems import DomainError
from servicekit.runtime import Runtime

PATH = "/v1/conversions"
# Larger bodies (no conversion is near this) go to FastAPI unread.
MAX_BODY = 64 * 1024
# A key refused, or not looked up while the database is away: FastAPI answers (401, 503).
UNAUTHENTICATED: tuple[type[Exception], ...] = (DomainError, *INFRASTRUCTURE_ERRORS)


class ConversionsFront:
    """Answers POST /v1/conversions itself where it can; everything else goes to `app`."""

    def __init__(self, app: FastAPIEntry, state: Any, registry: Any) -> None:
        self.app = app
        self.state = state
        self._route = FrontRoute(app, "POST", PATH, registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = self._route
        headers = header_map(scope)
        try:
            who = await route.principal(headers)
        except UNAUTHENTICATED:
            who = None
        inputs = route.inputs(headers)
        if who is None or inputs is None or not is_json(headers):
            await self.app(scope, receive, send)
            return
        body, more = await read_body(receive, MAX_BODY)
        if more:
            await self.app(scope, replay(body, True, receive), send)
            return
        cmd = route.body(body, ConversionIn)
        if cmd is None:
            await self.app(scope, replay(body, False, receive), send)
            return
        rt: Runtime = self.state.runtime
        tenant: Principal = who
        key: str | None = inputs["idempotency_key"]

        async def answer() -> int:
            out, status = await api.submit(rt, tenant, cmd, key)
            await send_json(send, status, out.__pydantic_serializer__.to_json(out))
            return status

        # The key's scopes are checked there, after the body: FastAPI too refuses a body that
        # is not JSON before it runs the route's dependencies.
        await route.respond(scope, send, answer, started, headers, who)

"""POST /v1/conversions in front of FastAPI: the hot path.

A plain ASGI middleware, the app's front door (servicekit's `ServiceApp.set_front`), answers a
well-formed conversion itself: it authenticates, parses the body with the same model, opens the
same server span the FastAPI instrumentation would (continuing the caller's trace), records the
same request metrics the Prometheus middleware would, and hands the conversion to the group
commit (conversion_batch.ConversionWriter) through the same code as the route (api.submit). Per
request that skips FastAPI's routing, dependency injection, response re-validation and the
middleware stack, which together cost more CPU than deciding the conversion.

Anything else goes on to FastAPI unchanged, and so does every request this path would refuse
before the handler (no or a bad API key, a bad Idempotency-Key, a body that is not JSON or not
a valid conversion): FastAPI answers those exactly as it always has (the body read here is
replayed to it). Refusals by the handler itself (409, 422 naming the field) are the same
problem+json documents the app's exception handlers write (servicekit.problems).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import propagate, trace
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from attribution_service.conversions import api
from attribution_service.conversions.schemas import ConversionIn
from servicekit.auth import ApiKeyAuthenticator, Principal
from servicekit.metrics import FrontDoorMetrics
from servicekit.problems import DomainError, problem
from servicekit.runtime import Runtime

log = logging.getLogger(__name__)
tracer = trace.get_tracer("attribution_service.front")

PATH = "/v1/conversions"
# Larger bodies (no conversion is near this) go to FastAPI unread.
MAX_BODY = 64 * 1024
JSON_RESPONSE = [(b"content-type", b"application/json")]


def _headers(scope: Scope) -> dict[bytes, bytes]:
    # ASGI servers give lower-case names; a repeated header keeps its first value here, and
    # the requests that could care (repeated Authorization) are refused by FastAPI anyway.
    out: dict[bytes, bytes] = {}
    for k, v in scope["headers"]:
        out.setdefault(k, v)
    return out


def _principal(auth: ApiKeyAuthenticator, headers: dict[bytes, bytes]) -> Principal | None:
    """servicekit.auth.presented_key + authenticate; None where FastAPI must answer."""
    raw = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, token = raw.partition(" ")
    key = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    if key is None:
        x = headers.get(b"x-api-key")
        key = x.decode("latin-1") if x else None
    try:
        return auth.authenticate(key)
    except DomainError:
        return None


class ConversionsFront:
    """Answers POST /v1/conversions itself where it can; everything else goes to `app`."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], state: Any, registry: Any
    ) -> None:
        self.app = app
        self.state = state
        self._metrics = FrontDoorMetrics(registry, PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = _headers(scope)
        who = _principal(self.state.authenticator, headers)
        key = headers.get(b"idempotency-key")
        idempotency_key = key.decode("latin-1") if key is not None else None
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if (
            who is None
            or (idempotency_key is not None and not 1 <= len(idempotency_key) <= 200)
            or content_type != b"application/json"
        ):
            await self.app(scope, receive, send)
            return
        body, more = await _read(receive)
        if more:
            await self.app(scope, _replay(body, True, receive), send)
            return
        try:
            cmd = ConversionIn.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body, False, receive), send)
            return
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in headers.items()
            if k in (b"traceparent", b"tracestate", b"baggage")
        }
        with tracer.start_as_current_span(
            f"POST {PATH}",
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={"http.method": "POST", "http.route": PATH, "http.target": PATH},
        ) as span:
            status = await self._answer(scope, send, who, cmd, idempotency_key)
            span.set_attribute("http.status_code", status)
            if status >= 500:
                span.set_status(trace.StatusCode.ERROR)
        self._metrics.observe("POST", status, time.perf_counter() - started)

    async def _answer(
        self,
        scope: Scope,
        send: Send,
        who: Principal,
        cmd: ConversionIn,
        idempotency_key: str | None,
    ) -> int:
        rt: Runtime = self.state.runtime
        try:
            out, status = await api.submit(rt, who, cmd, idempotency_key)
        except DomainError as exc:
            response = problem(exc.status, exc.title, exc.detail, instance=PATH, field=exc.field)
            await response(scope, _no_body, send)
            return exc.status
        except Exception:
            log.exception("unhandled error on POST %s", PATH)
            response = problem(
                500, "Internal error", "An unexpected error occurred.", instance=PATH
            )
            await response(scope, _no_body, send)
            return 500
        body = out.__pydantic_serializer__.to_json(out)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*JSON_RESPONSE, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return status


async def _read(receive: Receive) -> tuple[bytes, bool]:
    """The body, and whether more of it is left unread (beyond MAX_BODY)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False
        if size > MAX_BODY:
            return b"".join(chunks), True


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """`receive` for the wrapped app: the body read here first, then the rest as it comes."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


async def _no_body() -> Message:
    return {"type": "http.disconnect"}

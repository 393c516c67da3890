"""Front doors: plain ASGI apps that answer a service's hot path before FastAPI does
(`app.ServiceApp.set_front`), paying for none of FastAPI's per-request work (routing,
dependency injection, response re-validation, the middleware stack and its telemetry).

A front door stands in for a FastAPI route, which stays declared and keeps serving whatever the
front door passes on (and everything when the `FRONT_DOOR` setting is off). So that no rule
is written twice, the front door reads what it must apply from that route (`FrontRoute`, once,
on first use): the route's principal and the scopes its `auth.requires` dependencies name, its
header parameters (validated by the route's own fields) and its body model. What the route
answers, the front door answers with the same pieces: problem+json refusals and 500s
(servicekit.asgi, servicekit.problems), the server span FastAPI's instrumentation would open,
and the request metrics the Prometheus middleware would record (metrics.FrontDoorMetrics).

A request the front door would refuse before the handler (no or a bad key, a bad header, a
body it cannot take) goes on to FastAPI unchanged, its body replayed (asgi.replay), and is
answered there exactly as without a front door; a refusal by a scope or by the handler is
answered by the front door as the app's exception handlers would answer it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi._compat import field_annotation_is_scalar
from fastapi.dependencies.models import Dependant
from fastapi.responses import Response
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span
from prometheus_fastapi_instrumentator.routing import _effective_routes
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from referral_events.database_errors import INFRASTRUCTURE_ERRORS
from servicekit.asgi import (
    JSON,
    Headers,
    header_map,
    send_internal_error,
    send_problem,
    send_unavailable,
)
from servicekit.auth import ApiKeyAuthenticator, Principal, Requires, principal
from servicekit.db import act_for_all_tenants
from servicekit.metrics import FrontDoorMetrics
from servicekit.problems import DomainError

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

M = TypeVar("M", bound=BaseModel)

_TRACE_HEADERS = (b"traceparent", b"tracestate", b"baggage")


class FastAPIEntry:
    """FastAPI's own entry point of an app with a front door: where the front door passes on
    what it leaves, and the app whose route table it reads (`FrontRoute`)."""

    __slots__ = ("app",)

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self.app, scope, receive, send)


def is_json(headers: Headers) -> bool:
    """Whether the body is declared plain `application/json` (parameters aside): the bodies a
    front door parses. FastAPI takes more (`+json` types) by its own reading of the header;
    those go on to it."""
    return headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower() == JSON


@dataclass(frozen=True)
class RouteRules:
    """What a route applies before its handler, read from its dependency tree."""

    authenticator: ApiKeyAuthenticator | None  # None: a public route
    scopes: tuple[str, ...]
    # (parameter name, header name as ASGI gives it, the route's field)
    headers: tuple[tuple[str, bytes, Any], ...]
    body_model: Any


class FrontRoute:
    """The FastAPI route (`method`, path `template`) a front door stands in for, and what the
    front door applies as the route would. The route is looked up in the app's route table on
    first use (the table is complete by then) and what it declares is kept.

    Only what can refuse a request is read: the principal (`auth.principal`, also under
    `auth.requires`), the scopes, header parameters and the body. A route with query or cookie
    parameters, or path parameters other than plain strings, cannot have a front door (its
    rules would be skipped): its first request fails instead. Other dependencies (the runtime,
    the response) are not rules; the front door provides what it needs itself.

    Answers (`respond`) are counted and timed under `handler` (default: the template), as the
    Prometheus middleware labels the route's, and traced (`traced`) in the server span FastAPI's
    instrumentation opens, continuing the caller's W3C trace."""

    def __init__(
        self,
        app: FastAPIEntry,
        method: str,
        template: str,
        registry: Any = None,
        *,
        handler: str | None = None,
        traced: bool = True,
    ) -> None:
        self._app = app.app
        self.method = method
        self.template = template
        self._metrics = FrontDoorMetrics(registry, handler or template)
        self._span_name = f"{method} {template}" if traced else None
        self._rules: RouteRules | None = None

    @property
    def rules(self) -> RouteRules:
        rules = self._rules
        if rules is None:
            rules = self._rules = self._read_route()
        return rules

    async def principal(self, headers: Headers) -> Principal | None:
        """The route's principal (None for a public route); raises Unauthorized as the route's
        `auth.principal` dependency would."""
        authenticator = self.rules.authenticator
        if authenticator is None:
            act_for_all_tenants()  # as auth.Public: the route finds its tenant itself
            return None
        return await authenticator.from_headers(headers)

    def inputs(self, headers: Headers) -> dict[str, Any] | None:
        """The route's header parameters by name as its own fields validate them; None when one
        is missing or invalid (FastAPI's answer: pass the request on)."""
        values: dict[str, Any] = {}
        for name, key, field in self.rules.headers:
            raw = headers.get(key)
            if raw is None:
                if field.field_info.is_required():
                    return None
                default = field.default
                values[name] = default if default is None else copy.deepcopy(default)
                continue
            value, errors = field.validate(raw.decode("latin-1"), {}, loc=("header", field.alias))
            if errors:
                return None
            values[name] = value
        return values

    def body(self, raw: bytes, model: type[M]) -> M | None:
        """The body parsed by the route's body model (which must be `model`); None when it does
        not parse (FastAPI's answer: pass the request on)."""
        if model is not self.rules.body_model:
            raise TypeError(f"{self.template} takes {self.rules.body_model!r}, not {model!r}")
        try:
            return model.model_validate_json(raw)
        except (ValidationError, DomainError):
            # (a rule across fields raises InvalidInput naming its field: FastAPI answers it)
            return None

    async def respond(
        self,
        scope: Scope,
        send: Send,
        answer: Callable[[], Awaitable[int]],
        started: float,
        headers: Headers | None = None,
        who: Principal | None = None,
    ) -> None:
        """Apply the route's principal and scopes (`who`: already authenticated by the front
        door), then send `answer()`'s response, which returns its status. Refusals
        (DomainError) and unexpected errors are answered as the app's exception handlers
        answer them. Timed from `started` into the route's request metrics; traced in its
        server span (`headers`: the request's, when the front door has them)."""
        # One coroutine for all of it, the span opened and closed by hand rather than in a
        # `with` around a second one: this runs on every redirect.
        span: Span | None = None
        if self._span_name is not None:
            if headers is None:
                headers = header_map(scope)
            span = tracer.start_span(
                self._span_name,
                context=_trace_context(headers),
                kind=trace.SpanKind.SERVER,
                attributes={
                    "http.method": self.method,
                    "http.route": self.template,
                    "http.target": scope["path"],
                    "http.scheme": scope.get("scheme", "http"),
                    "http.flavor": scope.get("http_version", "1.1"),
                },
            )
            token = context.attach(trace.set_span_in_context(span))
        status = 500
        try:
            rules = self._rules or self.rules
            if rules.authenticator is not None:
                if who is None:
                    who = await rules.authenticator.from_headers(headers or header_map(scope))
                who.note_rate(scope)
                for required in rules.scopes:
                    who.require(required)
            elif who is None:
                act_for_all_tenants()
            status = await answer()
        except DomainError as exc:
            status = exc.status
            await send_problem(scope, send, exc)
        except INFRASTRUCTURE_ERRORS as exc:
            status = 503
            log.warning("database unavailable on %s %s: %r", scope["method"], scope["path"], exc)
            await send_unavailable(scope, send)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await send_internal_error(scope, send)
        finally:
            if span is not None:
                span.set_attribute("http.status_code", status)
                if status >= 500:
                    span.set_status(trace.StatusCode.ERROR)
                span.end()
                context.detach(token)
        self._metrics.observe(scope["method"], status, time.perf_counter() - started)

    def _read_route(self) -> RouteRules:
        # Routers included in the app are kept apart and resolved by FastAPI when routing; the
        # flattened table carries each route as the app serves it (prefix, the router's
        # dependencies), as the request metrics read it too.
        route: Any = next(
            (
                r
                for r in _effective_routes(list(self._app.routes))
                if getattr(r, "path", None) == self.template
                and self.method in (getattr(r, "methods", None) or ())
                and getattr(r, "dependant", None) is not None
            ),
            None,
        )
        if route is None:
            raise LookupError(f"no route {self.method} {self.template} to stand in for")
        tree = list(_walk(route.dependant))
        scopes = tuple(dict.fromkeys(d.call.scope for d in tree if isinstance(d.call, Requires)))
        authenticated = any(d.call is principal for d in tree)
        headers: list[tuple[str, bytes, Any]] = []
        for d in tree:
            if d.query_params or d.cookie_params:
                raise TypeError(f"{self.template}: a front door cannot apply query or cookies")
            for field in d.path_params:
                if field.field_info.annotation is not str or field.field_info.metadata:
                    raise TypeError(f"{self.template}: path parameter {field.name} has rules")
            for field in d.header_params:
                info = field.field_info
                if (
                    info.validation_alias is not None
                    or info.validate_default
                    or not field_annotation_is_scalar(info.annotation)
                ):
                    raise TypeError(f"{self.template}: header {field.name} is not a plain value")
                headers.append((field.name, field.alias.lower().encode("latin-1"), field))
        body = route.body_field
        return RouteRules(
            authenticator=self._app.state.authenticator if authenticated else None,
            scopes=scopes,
            headers=tuple(headers),
            body_model=body.field_info.annotation if body is not None else None,
        )


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _walk(sub)


def _trace_context(headers: Headers) -> Context:
    carrier = {
        name.decode(): value.decode("latin-1")
        for name in _TRACE_HEADERS
        if (value := headers.get(name)) is not None
    }
    return propagate.extract(carrier)


class RawAnswer(Response):
    """A FastAPI route's response written by a front door's own code, for the route to answer
    with the very code the front door runs (the front door off, or passing the request on):
    `answer(scope, send)` sends the whole response."""

    def __init__(self, answer: Callable[[Scope, Send], Awaitable[object]]) -> None:
        # Response.__init__ renders a body and headers; this one writes its own.
        self.background = None
        self._answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._answer(scope, send)

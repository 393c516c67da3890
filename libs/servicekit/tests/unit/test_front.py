"""Unit tests of the front door pieces (servicekit.front, servicekit.asgi, servicekit.auth): a toy
service whose one write route has a front door built as the services build theirs, answering
every case exactly as FastAPI answers it with the front door off (status, document, request
metrics, server span), and what a front door reads from the route it stands in for. No
infrastructure: the apps run without their lifespan (no runtime needed)."""

from __future__ import annotations

import inspect
import json
import time
from typing import Annotated, Any

import asyncpg
import pytest
from fastapi import APIRouter, Header, Query, Response
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field
from starlette.types import Message, Receive, Scope, Send

from devstack.testing import new_api_key
from servicekit.app import ServiceApp, create_service_app
from servicekit.asgi import header_map, read_body, replay, send_json
from servicekit.auth import Principal, presented_key, principal, requires
from servicekit.front import FastAPIEntry, FrontRoute, RawAnswer, is_json
from servicekit.problems import Conflict, DomainError
from servicekit.runtime import ServiceSpec
from servicekit.settings import ServiceSettings

PATH = "/v1/things"


class Thing(BaseModel):
    name: str = Field(min_length=1, max_length=20)


def decide(who: Principal, thing: Thing, idempotency_key: str | None) -> tuple[dict[str, Any], int]:
    """The handler's own work, shared by the route and the front door (as api.submit is)."""
    if thing.name == "taken":
        raise Conflict("that name is taken", field="name")
    if thing.name == "boom":
        raise RuntimeError("the handler failed")
    if thing.name == "db-away":
        raise ConnectionRefusedError("the database is away")
    if thing.name == "db-broken":
        raise asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        )
    return {"tenant": who.tenant_id, "name": thing.name, "key": idempotency_key}, 201


def _router() -> APIRouter:
    router = APIRouter()

    @router.post(PATH, status_code=201, dependencies=[requires("things:write")])
    async def make_thing(
        thing: Thing,
        who: Annotated[Principal, requires("things:read")],
        response: Response,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=8)] = None,
    ) -> dict[str, Any]:
        out, response.status_code = decide(who, thing, idempotency_key)
        return out

    @router.get("/v1/things/{name}")
    async def get_thing(name: str, who: Annotated[Principal, requires("things:read")]) -> Any:
        return RawAnswer(lambda scope, send: _echo(send, name, who))

    return router


async def _echo(send: Send, name: str, who: Principal) -> int:
    await send_json(send, 200, json.dumps({"name": name, "tenant": who.tenant_id}).encode())
    return 200


class ThingsFront:
    """POST /v1/things in front of FastAPI, built as the services build theirs."""

    def __init__(self, app: FastAPIEntry, registry: Any) -> None:
        self.app = app
        self.route = FrontRoute(app, "POST", PATH, registry)
        self.passed_on = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = header_map(scope)
        try:
            who = await self.route.principal(headers)
        except DomainError:
            who = None
        inputs = self.route.inputs(headers)
        if who is None or inputs is None or not is_json(headers):
            return await self._pass_on(scope, receive, send)
        body, more = await read_body(receive, 1024)
        thing = None if more else self.route.body(body, Thing)
        if thing is None:
            return await self._pass_on(scope, replay(body, more, receive), send)
        tenant: Principal = who

        async def answer() -> int:
            out, status = decide(tenant, thing, inputs["idempotency_key"])
            await send_json(send, status, json.dumps(out).encode())
            return status

        await self.route.respond(scope, send, answer, started, headers, who)

    async def _pass_on(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.passed_on += 1
        await self.app(scope, receive, send)


KEYS = {
    "writer": ["things:write", "things:read"],
    "reader": ["things:read"],
    "admin": ["*"],
}


def _service(front_door: bool) -> tuple[ServiceApp, dict[str, str]]:
    keys, entries = {}, []
    for name, scopes in KEYS.items():
        keys[name], entry = new_api_key("acme")
        entries.append({**entry, "scopes": scopes})
    settings = ServiceSettings.model_validate({"api_keys": entries, "front_door": front_door})
    spec = ServiceSpec(name="things", schema="things", package="things")
    app = create_service_app(spec, settings, [_router()])
    registry = app.state.metrics.registry
    app.set_front(lambda fastapi: ThingsFront(fastapi, registry))
    return app, keys


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        _service(False)  # create_service_app configures tracing
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"

CASES: list[tuple[str, str, dict[str, Any], dict[str, str], int, bool]] = [
    # (case, key, json body, extra headers, status, answered by the front door)
    ("created", "writer", {"name": "a"}, {"idempotency-key": "k1"}, 201, True),
    ("any scope", "admin", {"name": "b"}, {}, 201, True),
    ("lacks a scope", "reader", {"name": "c"}, {}, 403, True),
    ("refused by the handler", "writer", {"name": "taken"}, {}, 409, True),
    ("handler fails", "writer", {"name": "boom"}, {}, 500, True),
    ("database away", "writer", {"name": "db-away"}, {}, 503, True),
    ("connection left broken", "writer", {"name": "db-broken"}, {}, 503, True),
    ("no key", "", {"name": "d"}, {}, 401, False),
    ("unknown key", "rk_nosuchkey", {"name": "d"}, {}, 401, False),
    ("empty Idempotency-Key", "writer", {"name": "d"}, {"idempotency-key": ""}, 422, False),
    ("long Idempotency-Key", "writer", {"name": "d"}, {"idempotency-key": "k" * 9}, 422, False),
    ("invalid body", "writer", {"name": ""}, {}, 422, False),
    ("unknown body", "writer", {"nom": "d"}, {}, 422, False),
]


def _call(app: ServiceApp, keys: dict[str, str], case: tuple[Any, ...]) -> Any:
    _, key, body, extra, _, _ = case
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", **extra}
    if key:
        headers["authorization"] = f"Bearer {keys.get(key, key)}"
    return TestClient(app, raise_server_exceptions=False).post(PATH, json=body, headers=headers)


def _metrics(app: ServiceApp) -> dict[tuple[str, str, str], float]:
    text = app.state.metrics.exposition().decode()
    return {
        (s.labels["handler"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "http_requests_total"
    }


def _server_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    return span


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_front_door_answers_as_fastapi_does(
    case: tuple[Any, ...], spans: InMemorySpanExporter
) -> None:
    answers = {}
    for front_door in (True, False):
        app, keys = _service(front_door)
        assert (app.front is not None) == front_door
        spans.clear()
        r = _call(app, keys, case)
        span = _server_span(spans)
        answers[front_door] = (
            r.status_code,
            r.headers["content-type"],
            r.json(),
            _metrics(app),
            (span.name, span.parent.span_id if span.parent else None, span.context.trace_id),
            {k: span.attributes[k] for k in ("http.route", "http.status_code", "http.method")},
            span.status.status_code,
        )
        if front_door:
            assert isinstance(app.front, ThingsFront)
            assert app.front.passed_on == (0 if case[-1] else 1)
    assert answers[True] == answers[False]
    status, content_type, _, metrics, (name, parent, trace_id), attributes, _ = answers[True]
    assert status == case[4] and attributes["http.status_code"] == status
    assert content_type == ("application/json" if status < 300 else "application/problem+json")
    assert metrics == {(PATH, "POST", f"{status // 100}xx"): 1.0}
    assert name == f"POST {PATH}" and attributes["http.route"] == PATH
    assert (parent, trace_id) == (int(PARENT_ID, 16), int(TRACE_ID, 16))


def test_a_front_door_reads_what_its_route_declares() -> None:
    app, _ = _service(True)
    entry = FastAPIEntry(app)
    rules = FrontRoute(entry, "POST", PATH).rules
    assert rules.scopes == ("things:write", "things:read")
    assert rules.authenticator is app.state.authenticator
    assert [(name, key) for name, key, _ in rules.headers] == [
        ("idempotency_key", b"idempotency-key")
    ]
    assert rules.body_model is Thing
    route = FrontRoute(entry, "POST", PATH)
    assert route.inputs({b"idempotency-key": b"k"}) == {"idempotency_key": "k"}
    assert route.inputs({}) == {"idempotency_key": None}
    assert route.inputs({b"idempotency-key": b"123456789"}) is None
    assert route.body(b'{"name": "x"}', Thing) == Thing(name="x")
    assert route.body(b'{"name": ""}', Thing) is None
    with pytest.raises(TypeError):
        route.body(b"{}", BaseModel)
    assert FrontRoute(entry, "GET", "/healthz").rules.authenticator is None

    # a scope on the router the route is included with counts as the route's own
    outer = APIRouter()
    outer.include_router(_router(), prefix="/v2", dependencies=[requires("things:admin")])
    app.include_router(outer)
    nested = FrontRoute(entry, "POST", "/v2" + PATH).rules
    assert nested.scopes == ("things:admin", "things:write", "things:read")

    with pytest.raises(LookupError):
        _ = FrontRoute(entry, "PUT", PATH).rules

    queried = APIRouter()

    @queried.get("/v1/queried")
    async def with_a_query(limit: Annotated[int, Query(le=10)] = 5) -> int:
        return limit

    app.include_router(queried)
    with pytest.raises(TypeError):  # its query rule would be skipped
        _ = FrontRoute(entry, "GET", "/v1/queried").rules


def test_scopes_and_principal_as_fastapi_dependencies() -> None:
    app, keys = _service(False)
    client = TestClient(app)
    got = client.get("/v1/things/x", headers={"x-api-key": keys["reader"]})
    assert got.status_code == 200 and got.json() == {"name": "x", "tenant": "acme"}
    refused = client.get("/v1/things/x")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.headers["content-type"] == "application/problem+json"
    assert inspect.iscoroutinefunction(principal)  # on the event loop, not the thread pool


def test_headers_and_the_presented_key() -> None:
    scope = {"headers": [(b"authorization", b"Bearer  k1 "), (b"authorization", b"Bearer k2")]}
    headers = header_map(scope)
    assert headers == {b"authorization": b"Bearer  k1 "}  # the first, as Starlette's get
    assert presented_key(headers) == "k1"
    assert presented_key({b"authorization": b"Basic a", b"x-api-key": b"k3"}) == "k3"
    assert presented_key({b"authorization": b"Bearer  "}) is None
    assert presented_key({}) is None
    assert is_json({b"content-type": b"Application/JSON; charset=utf-8"})
    assert not is_json({b"content-type": b"application/merge-patch+json"})
    assert not is_json({})


def _receiver(chunks: list[bytes]) -> tuple[Receive, list[Message]]:
    messages: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    taken: list[Message] = []

    async def receive() -> Message:
        message = messages.pop(0)
        taken.append(message)
        return message

    return receive, taken


async def test_a_body_is_read_up_to_its_limit_and_replayed_whole() -> None:
    receive, _ = _receiver([b"ab", b"cd"])
    assert await read_body(receive, 10) == (b"abcd", False)

    receive, taken = _receiver([b"abc", b"def", b"ghi"])
    body, more = await read_body(receive, 4)
    assert (body, more, len(taken)) == (b"abcdef", True, 2)
    again = replay(body, more, receive)
    first, rest = await again(), await again()
    assert first == {"type": "http.request", "body": b"abcdef", "more_body": True}
    assert rest["body"] == b"ghi" and not rest["more_body"]


def test_front_door_setting_off_leaves_fastapi_alone() -> None:
    app, keys = _service(False)
    assert app.front is None
    assert ServiceSettings().front_door is True
    r = TestClient(app).post(
        PATH, json={"name": "z"}, headers={"authorization": f"Bearer {keys['writer']}"}
    )
    assert r.status_code == 201 and r.json() == {"tenant": "acme", "name": "z", "key": None}

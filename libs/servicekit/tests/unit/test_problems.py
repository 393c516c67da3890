"""The one mapping of errors to problem+json (servicekit.problems) and the body limit in front
of every app (servicekit.bodylimit): JSON pointers in `field`, malformed JSON without a field,
one type URI per kind, 413 before a body over the limit is read. A toy service, no
infrastructure (the apps run without their lifespan)."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Header, Query, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from devstack.testing import new_api_key
from servicekit.app import ServiceApp, create_service_app
from servicekit.asgi import read_body, send_json
from servicekit.auth import requires
from servicekit.problems import PROBLEM_BASE, InvalidInput, pointer, validation_field
from servicekit.runtime import ServiceSpec
from servicekit.settings import ServiceSettings


class Rule(BaseModel):
    amount: int = Field(ge=0)


class Body(BaseModel):
    order_id: str = Field(min_length=1)
    rules: list[Rule] = Field(default_factory=list)


def _router() -> APIRouter:
    router = APIRouter(dependencies=[requires("things:write")])

    @router.post("/v1/things")
    async def make(
        body: Body,
        limit: Annotated[int, Query(ge=1, le=10)] = 5,
        idempotency_key: Annotated[str | None, Header(max_length=4)] = None,
    ) -> dict[str, Any]:
        if body.order_id == "taken":
            raise InvalidInput("taken", field="rules.0.amount")
        return {"ok": True}

    @router.post("/v1/uploads")
    async def upload(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"size": size}

    @router.post("/v1/actions/{thing_id}/go")
    async def act(thing_id: str) -> dict[str, str]:
        ACTED.append(thing_id)
        return {"done": thing_id}

    return router


ACTED: list[str] = []


class Front:
    """A front door reading bodies itself, as attribution-service's conversions front does."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/front":
            body, _ = await read_body(receive, 10 * 1024 * 1024)
            await send_json(send, 200, b'{"size": %d}' % len(body))
            return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def service() -> tuple[ServiceApp, dict[str, str]]:
    key, entry = new_api_key("acme")
    settings = ServiceSettings.model_validate({"api_keys": [entry], "max_body_bytes": 4096})
    app = create_service_app(ServiceSpec(name="t", schema="t", package="t"), settings, [_router()])
    app.limit_route_body("POST", "/v1/uploads", 64 * 1024)
    app.set_front(Front)
    return app, {"authorization": f"Bearer {key}"}


def test_pointer_forms() -> None:
    assert pointer("order_id") == "/order_id"
    assert pointer("/rules/0/amount") == "/rules/0/amount"
    assert pointer("rules.0.amount") == "/rules/0/amount"
    assert pointer("milestones[2].amount") == "/milestones/2/amount"
    assert pointer("Idempotency-Key") == "/Idempotency-Key"
    assert pointer(("a/b", "c~d", 0)) == "/a~1b/c~0d/0"
    assert validation_field(("body", "rules", 0, "amount")) == ("/rules/0/amount", "body")
    assert validation_field(("query", "limit")) == ("/limit", "query")
    assert validation_field(("header", "idempotency-key")) == ("/Idempotency-Key", "header")
    assert validation_field(("body",)) == (None, "body")
    assert InvalidInput("x", field="emails.0").field == "/emails/0"


def _post(service: tuple[ServiceApp, dict[str, str]], path: str, **kw: Any) -> Any:
    app, auth = service
    headers = {**auth, **kw.pop("headers", {})}
    return TestClient(app, raise_server_exceptions=False).post(path, headers=headers, **kw)


@pytest.mark.parametrize(
    ("body", "params", "headers", "field", "where"),
    [
        ({}, {}, {}, "/order_id", "body"),
        ({"order_id": "o", "rules": [{"amount": -1}]}, {}, {}, "/rules/0/amount", "body"),
        ({"order_id": "o"}, {"limit": 99}, {}, "/limit", "query"),
        ({"order_id": "o"}, {}, {"idempotency-key": "long-key"}, "/Idempotency-Key", "header"),
    ],
)
def test_validation_errors_point_at_the_field(
    service: tuple[ServiceApp, dict[str, str]],
    body: dict[str, Any],
    params: dict[str, Any],
    headers: dict[str, str],
    field: str,
    where: str,
) -> None:
    r = _post(service, "/v1/things", json=body, params=params, headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == PROBLEM_BASE + "validation"
    assert problem["field"] == field
    assert problem["errors"][0]["in"] == where


def test_a_domain_error_names_its_field_as_a_pointer(
    service: tuple[ServiceApp, dict[str, str]],
) -> None:
    r = _post(service, "/v1/things", json={"order_id": "taken"})
    assert r.status_code == 422 and r.json()["field"] == "/rules/0/amount"


@pytest.mark.parametrize("raw", [b'{"order_id": "o",', b"not json", b'{"order_id": "o"} x'])
def test_malformed_json_says_so_without_a_field(
    service: tuple[ServiceApp, dict[str, str]], raw: bytes
) -> None:
    r = _post(service, "/v1/things", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"] == PROBLEM_BASE + "malformed-json"
    assert "field" not in problem and "not valid JSON" in problem["detail"]


def test_unknown_route_and_method_have_their_types(
    service: tuple[ServiceApp, dict[str, str]],
) -> None:
    app, auth = service
    client = TestClient(app)
    assert client.get("/v1/nothing", headers=auth).json()["type"] == PROBLEM_BASE + "not-found"
    wrong = client.get("/v1/things", headers=auth).json()
    assert wrong["type"] == PROBLEM_BASE + "method-not-allowed"
    assert client.post("/v1/things", json={}).json()["type"] == PROBLEM_BASE + "unauthorized"


def _too_large(r: Any, limit: int) -> None:
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == PROBLEM_BASE + "body-too-large"
    assert str(limit) in r.json()["detail"]


def _chunks(total: int, size: int = 1024) -> Any:
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size


def test_a_declared_length_over_the_limit_is_refused_before_anything_runs(
    service: tuple[ServiceApp, dict[str, str]],
) -> None:
    ACTED.clear()
    big = b"x" * (5 * 1024 * 1024)
    for path in ("/v1/things", "/v1/actions/t1/go", "/front", "/v1/nothing"):
        _too_large(_post(service, path, content=big), 4096)
    # a route without a body would have run its handler: it did not
    assert ACTED == []
    _too_large(_post(service, "/v1/uploads", content=big), 64 * 1024)
    # under the limits, as before
    assert _post(service, "/v1/uploads", content=b"y" * 10_000).json() == {"size": 10_000}
    assert _post(service, "/front", content=b"y" * 100).json() == {"size": 100}


def test_a_chunked_body_is_refused_once_it_passes_the_limit(
    service: tuple[ServiceApp, dict[str, str]],
) -> None:
    # Without a length, through FastAPI's body parsing, a route's own stream, a front door.
    _too_large(_post(service, "/v1/things", content=_chunks(10_000)), 4096)
    _too_large(_post(service, "/v1/uploads", content=_chunks(100_000)), 64 * 1024)
    _too_large(_post(service, "/front", content=_chunks(10_000)), 4096)
    assert _post(service, "/v1/uploads", content=_chunks(20_000)).json() == {"size": 20_480}

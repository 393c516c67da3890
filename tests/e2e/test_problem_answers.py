"""The same answers for the same mistakes, on every route of every service, read from each
app's route table (not a hand list), with the hot paths' front doors on and off:

- a body over the route's limit: 413 `body-too-large` before anything reads or parses it
  (a declared Content-Length, and a chunked body for the routes that read one);
- a body that is not JSON, to every route taking a JSON body: 422 `malformed-json`, no field;
- a JSON body missing a required field: 422 `validation`, `field` the pointer to it;
- a query parameter of the wrong type: 422 `validation`, `field` `/<name>`.

Every one of these is refused before the route's handler runs, so the apps run here without
their lifespan (no Kafka, no Postgres): what answers is the app as deployed, body limits, front
doors, FastAPI and the problem handlers. An unknown parent's 404 is tested per service, with
its database (the services' integration tests)."""

from __future__ import annotations

import hashlib
import importlib
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from devstack.services import SERVICES
from servicekit.problems import PROBLEM_BASE
from servicekit.routes import RouteAccess, route_access

FIVE_MB = 5 * 1024 * 1024
JSON = {"content-type": "application/json"}


def _key() -> tuple[str, dict[str, Any]]:
    key = "rk_" + secrets.token_urlsafe(16)
    return key, {"tenant_id": "acme", "key_sha256": hashlib.sha256(key.encode()).hexdigest()}


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _apps(front_door: bool) -> Iterator[tuple[str, FastAPI, dict[str, str], list[RouteAccess]]]:
    for svc in SERVICES:
        settings_type = importlib.import_module(f"{svc.package}.config").Settings
        factory = importlib.import_module(f"{svc.package}.main").create_app
        key, entry = _key()
        settings = settings_type(environment="dev", api_keys=[entry], front_door=front_door)
        app = factory(settings)
        yield svc.name, app, {"Authorization": f"Bearer {key}"}, route_access(app)


def _body_model(r: RouteAccess) -> type[BaseModel] | None:
    field = getattr(r.route, "body_field", None)
    if field is None:
        return None
    model = field.field_info.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _problem(got: Any, status: int, kind: str, where: str) -> dict[str, Any]:
    assert got.status_code == status, (where, got.status_code, got.text[:300])
    assert got.headers["content-type"] == "application/problem+json", where
    if got.request.method == "HEAD":
        return {"type": PROBLEM_BASE + kind, "status": status, "detail": "(HEAD: no body)"}
    problem: dict[str, Any] = got.json()
    assert problem["type"] == PROBLEM_BASE + kind, (where, problem)
    assert problem["status"] == status
    return problem


def _limit(app: FastAPI, method: str, path: str) -> int:
    limits = app.body_limits  # type: ignore[attr-defined]
    return int(limits.limit_for(method, path))


@pytest.mark.parametrize("front_door", [True, False], ids=["front", "fastapi"])
def test_a_body_over_the_limit_is_refused_on_every_route(front_door: bool) -> None:
    checked = 0
    for service, app, auth, routes in _apps(front_door):
        client = TestClient(app, raise_server_exceptions=False)
        for r in routes:
            url = _url(r.path)
            where = f"{service} {r.method} {r.path}"
            limit = _limit(app, r.method, url)
            size = max(FIVE_MB, limit + 1)
            got = client.request(r.method, url, headers={**auth, **JSON}, content=b"x" * size)
            problem = _problem(got, 413, "body-too-large", where)
            assert "field" not in problem, where
            assert r.method == "HEAD" or str(limit) in problem["detail"], where
            if _body_model(r) is not None:
                # No length: read until it passes the limit, then refused.
                chunks = (b" " * 65536 for _ in range(size // 65536 + 1))
                got = client.request(r.method, url, headers={**auth, **JSON}, content=chunks)
                _problem(got, 413, "body-too-large", where + " (chunked)")
            elif limit > FIVE_MB:
                # The bulk upload's own limit, as it streams in (a CSV past the row cap or the
                # byte limit, whichever comes first: both are this type).
                rows = (b"customer_id\n" if i == 0 else b"c%d\n" % i for i in range(10**6))
                got = client.request(
                    r.method, url, headers={**auth, "content-type": "text/csv"}, content=rows
                )
                _problem(got, 413, "body-too-large", where + " (chunked)")
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("front_door", [True, False], ids=["front", "fastapi"])
def test_malformed_json_has_its_type_and_no_field_on_every_json_route(front_door: bool) -> None:
    checked = 0
    for service, app, auth, routes in _apps(front_door):
        client = TestClient(app, raise_server_exceptions=False)
        for r in routes:
            if _body_model(r) is None:
                continue
            where = f"{service} {r.method} {r.path}"
            for raw in (b'{"type": "purchase",', b"{'single': 'quotes'}", b"[1, 2"):
                got = client.request(r.method, _url(r.path), headers={**auth, **JSON}, content=raw)
                problem = _problem(got, 422, "malformed-json", where)
                assert "field" not in problem, (where, problem)
            checked += 1
    assert checked > 20


@pytest.mark.parametrize("front_door", [True, False], ids=["front", "fastapi"])
def test_a_missing_field_is_named_by_its_pointer_on_every_route(front_door: bool) -> None:
    checked = 0
    for service, app, auth, routes in _apps(front_door):
        client = TestClient(app, raise_server_exceptions=False)
        for r in routes:
            model = _body_model(r)
            if model is None:
                continue
            required = [
                "/" + (info.alias or name)
                for name, info in model.model_fields.items()
                if info.is_required()
            ]
            if not required:
                continue
            where = f"{service} {r.method} {r.path}"
            got = client.request(r.method, _url(r.path), headers=auth, json={})
            problem = _problem(got, 422, "validation", where)
            # (a required header, e.g. Idempotency-Key, may be named first)
            assert problem["field"] == problem["errors"][0]["field"], (where, problem)
            body = [e["field"] for e in problem["errors"] if e["in"] == "body"]
            assert body and body[0] in required, (where, problem, required)
            assert all(e["field"].startswith("/") for e in problem["errors"]), where
            checked += 1
    assert checked > 15


def _query_params(dependant: Any) -> list[Any]:
    """A route's query parameters, its dependencies' included."""
    found = list(dependant.query_params)
    for sub in dependant.dependencies:
        found += [p for p in _query_params(sub) if p not in found]
    return found


@pytest.mark.parametrize("front_door", [True, False], ids=["front", "fastapi"])
def test_a_query_parameter_of_the_wrong_type_is_named_by_its_pointer(front_door: bool) -> None:
    checked = 0
    for service, app, auth, routes in _apps(front_door):
        client = TestClient(app, raise_server_exceptions=False)
        for r in routes:
            if r.path.startswith("/v1/me"):
                continue  # an advocate token's routes: refused (401) before their parameters
            # the route's own query parameters and its dependencies' (the page's `limit`)
            for param in _query_params(r.route.dependant):
                if param.field_info.annotation not in (int, int | None):
                    continue
                where = f"{service} {r.method} {r.path} ?{param.alias}"
                got = client.request(
                    r.method,
                    _url(r.path),
                    headers=auth,
                    params={param.alias: "not-a-number"},
                    **({"json": {}} if _body_model(r) else {}),
                )
                problem = _problem(got, 422, "validation", where)
                fields = {e.get("field") for e in problem["errors"]}
                assert f"/{param.alias}" in fields, (where, problem)
                assert any(e["in"] == "query" for e in problem["errors"]), where
                checked += 1
    assert checked > 5


# Routes whose path parameter is not a parent resource of the workspace (the redirect and the
# widget files are public; a template or locale is a name from a fixed list, answered 422).
NOT_A_PARENT = re.compile(r"^/(r|widget)/|\{template\}|\{locale\}|\{email\}|\{token\}")


@pytest.mark.integration
@pytest.mark.parametrize("service", [s.name for s in SERVICES])
async def test_an_unknown_parent_is_404_on_every_read(namespace: Any, service: str) -> None:
    """Every GET under an id the workspace does not have answers 404 `not-found`."""
    from devstack.testing import migrate, serve_in_process

    svc = next(s for s in SERVICES if s.name == service)
    await migrate(namespace.database_url, svc.schema, svc.package)
    settings_type = importlib.import_module(f"{svc.package}.config").Settings
    factory = importlib.import_module(f"{svc.package}.main").create_app
    key, entry = _key()
    settings = settings_type(**namespace.settings_env(), api_keys=[entry], run_consumers=False)
    app = factory(settings)
    wrong: list[str] = []
    async with serve_in_process(app) as client:
        for r in route_access(app):
            if r.method != "GET" or "{" not in r.path or r.public or NOT_A_PARENT.search(r.path):
                continue
            url = re.sub(r"\{[^}]+\}", "nosuch_1", r.path)
            got = await client.get(url, headers={"Authorization": f"Bearer {key}"})
            if got.status_code != 404 or got.json().get("type") != PROBLEM_BASE + "not-found":
                wrong.append(f"{r.path}: {got.status_code} {got.text[:120]}")
    assert not wrong, "\n".join(wrong)

"""What a route declares reaches the front door of POST /v1/conversions (servicekit.front): a
scope added to the route is applied by the front door, which answers the refusal itself exactly
as FastAPI does; what the route refuses before its handler goes on to FastAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter

from attribution_service import main
from attribution_service.config import Settings
from attribution_service.conversions import api
from devstack.pytest_plugin import Namespace
from devstack.testing import FRONT_AND_FASTAPI, migrate, new_api_key, serve_in_process
from servicekit.auth import requires

pytestmark = [pytest.mark.integration, FRONT_AND_FASTAPI]

SIGNUP = {"type": "signup", "customer_id": "cus_1"}


async def _keys(namespace: Namespace, **scopes: list[str]) -> tuple[Settings, dict[str, str]]:
    await migrate(namespace.database_url, "attribution", "attribution_service")
    keys, entries = {}, []
    for name, granted in scopes.items():
        keys[name], entry = new_api_key("acme")
        entries.append({**entry, "scopes": granted})
    return Settings(**namespace.settings_env(), api_keys=entries), keys


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def scoped(
    namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], bool]]:
    """The service with a scope on its routes, declared as a route declares it (the front
    door's code names none): every route of the conversions router requires conversions:write."""
    settings, keys = await _keys(
        namespace, writer=["conversions:write"], reader=["conversions:read"], admin=["*"]
    )
    scoped_router = APIRouter()
    scoped_router.include_router(api.router, dependencies=[requires("conversions:write")])
    routers = [scoped_router if r is api.router else r for r in main.ROUTERS]
    monkeypatch.setattr(main, "ROUTERS", routers)
    app = main.create_app(settings)
    async with serve_in_process(app) as client:
        yield client, keys, app.front is not None


async def test_a_scope_declared_on_the_route_is_applied_on_the_front_path(
    scoped: tuple[httpx.AsyncClient, dict[str, str], bool], front_door: list[str]
) -> None:
    client, keys, on = scoped

    refused = await client.post("/v1/conversions", json=SIGNUP, headers=_bearer(keys["reader"]))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json() == {
        "type": "https://referral.dev/problems/forbidden",
        "title": "Forbidden",
        "status": 403,
        "detail": "this API key lacks the 'conversions:write' scope",
        "instance": "/v1/conversions",
    }
    # answered by the front door itself (with it off, by FastAPI: the same document)
    assert front_door == (["/v1/conversions"] if on else [])

    for key in ("writer", "admin"):
        r = await client.post(
            "/v1/conversions",
            json={**SIGNUP, "customer_id": f"cus_{key}"},
            headers=_bearer(keys[key]),
        )
        assert r.status_code == 201, r.text
    assert len(front_door) == (3 if on else 0)


async def test_what_the_route_refuses_before_its_handler_goes_on_to_fastapi(
    namespace: Namespace, front_door: list[str]
) -> None:
    settings, keys = await _keys(namespace, admin=["*"])
    async with serve_in_process(main.create_app(settings), keys["admin"]) as client:
        unknown_key = await client.post(
            "/v1/conversions", json=SIGNUP, headers=_bearer("rk_test_nosuchkey")
        )
        assert unknown_key.status_code == 401
        assert unknown_key.headers["www-authenticate"] == "Bearer"
        long_key = await client.post(
            "/v1/conversions", json=SIGNUP, headers={"Idempotency-Key": "k" * 201}
        )
        assert long_key.status_code == 422
        assert long_key.json()["field"] == "/Idempotency-Key"
        empty_key = await client.post(
            "/v1/conversions", json=SIGNUP, headers={"Idempotency-Key": ""}
        )
        assert empty_key.status_code == 422
        not_json = await client.post(
            "/v1/conversions", content=b"type=signup", headers={"content-type": "text/plain"}
        )
        assert not_json.status_code == 422
        bad_json = await client.post(
            "/v1/conversions", content=b"{", headers={"content-type": "application/json"}
        )
        assert bad_json.status_code == 422
        # none of them was answered by the front door
        assert front_door == []
        ok = await client.post("/v1/conversions", json=SIGNUP, headers={"Idempotency-Key": "k"})
        assert ok.status_code == 201, ok.text

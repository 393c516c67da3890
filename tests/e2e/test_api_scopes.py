"""Every route of every service declares its scope (or that it is public, and why), read from
each app's route table: a key lacking the route's scope gets 403, a key with it does not. And
docs/api-scopes.md is the table of route -> scope generated from the code.

Regenerate the table:
`UPDATE_API_SCOPES=1 uv run --frozen pytest tests/e2e/test_api_scopes.py -k doc`.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from attribution_service.config import Settings as AttributionSettings
from attribution_service.main import create_app as attribution_app
from devstack.pytest_plugin import Namespace
from devstack.testing import migrate, serve_in_process
from link_service.config import Settings as LinkSettings
from link_service.main import create_app as link_app
from notification_service.config import Settings as NotificationSettings
from notification_service.main import create_app as notification_app
from reward_service.config import Settings as RewardSettings
from reward_service.main import create_app as reward_app
from servicekit.auth import SCOPES
from servicekit.routes import RouteAccess, route_access

DOC = Path(__file__).resolve().parents[2] / "docs" / "api-scopes.md"

# (service, schema, package, settings, app factory)
SERVICES: list[tuple[str, str, str, type[Any], Callable[[Any], FastAPI]]] = [
    ("link-service", "link", "link_service", LinkSettings, link_app),
    ("attribution-service", "attribution", "attribution_service", AttributionSettings,
     attribution_app),
    ("reward-service", "reward", "reward_service", RewardSettings, reward_app),
    ("notification-service", "notification", "notification_service", NotificationSettings,
     notification_app),
]  # fmt: skip


def _key(scopes: list[str]) -> tuple[str, dict[str, Any]]:
    key = "rk_" + secrets.token_urlsafe(16)
    digest = hashlib.sha256(key.encode()).hexdigest()
    return key, {"tenant_id": "acme", "key_sha256": digest, "scopes": scopes}


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def render() -> str:
    lines = [
        "# API scopes",
        "",
        "Generated from the services' route tables (`servicekit.routes.route_access`); "
        "`tests/e2e/test_api_scopes.py` fails when this file is stale. Regenerate with "
        "`UPDATE_API_SCOPES=1 uv run --frozen pytest tests/e2e/test_api_scopes.py -k doc`.",
        "",
        "## Scopes",
        "",
        "| scope | lets a key |",
        "| --- | --- |",
        *(f"| `{scope}` | {what} |" for scope, what in SCOPES.items()),
        "",
        "Bootstrap keys (`API_KEYS`) carry `*`, every scope, and alone may manage workspaces.",
        "",
        "## Routes",
        "",
        "| service | method | path | scope |",
        "| --- | --- | --- | --- |",
    ]
    for service, _schema, _package, settings_type, factory in SERVICES:
        app = factory(settings_type(environment="dev"))
        for r in route_access(app):
            who = ", ".join(f"`{s}`" for s in r.scopes) if r.scopes else f"public: {r.public}"
            lines.append(f"| {service} | {r.method} | `{r.path}` | {who} |")
    return "\n".join(lines) + "\n"


def test_doc_is_generated_from_the_code() -> None:
    text = render()
    if os.environ.get("UPDATE_API_SCOPES"):
        DOC.write_text(text)
    assert DOC.read_text() == text, (
        "docs/api-scopes.md is stale: regenerate it (see this test module's docstring)"
    )


def test_every_route_declares_a_known_scope_or_public() -> None:
    for _service, _schema, _package, settings_type, factory in SERVICES:
        for r in route_access(factory(settings_type(environment="dev"))):
            assert r.scopes or r.public, f"{r.method} {r.path} declares no scope and no public()"
            assert not (r.scopes and r.public), f"{r.method} {r.path} is both"
            for scope in r.scopes:
                assert scope in SCOPES, f"{r.method} {r.path}: unknown scope {scope}"


@pytest.mark.integration
@pytest.mark.parametrize("service", [s[0] for s in SERVICES])
async def test_every_route_refuses_a_key_without_its_scope(
    namespace: Namespace, service: str
) -> None:
    _name, schema, package, settings_type, factory = next(s for s in SERVICES if s[0] == service)
    await migrate(namespace.database_url, schema, package)
    lacking = {scope: _key([s for s in SCOPES if s != scope]) for scope in SCOPES}
    having: dict[tuple[str, ...], tuple[str, dict[str, Any]]] = {}
    routes: list[RouteAccess] = route_access(factory(settings_type(environment="dev")))
    for r in routes:
        if r.scopes and r.scopes not in having:
            having[r.scopes] = _key(list(r.scopes))
    entries = [e for _k, e in lacking.values()] + [e for _k, e in having.values()]
    settings = settings_type(**namespace.settings_env(), api_keys=entries, run_consumers=False)
    checked = 0
    async with serve_in_process(factory(settings)) as client:
        for r in routes:
            if r.public is not None:
                continue
            body = {"json": {}} if r.method in ("POST", "PUT", "PATCH") else {}
            for scope in r.scopes:
                key = lacking[scope][0]
                got = await client.request(
                    r.method, _url(r.path), headers={"Authorization": f"Bearer {key}"}, **body
                )
                assert got.status_code == 403, (r.method, r.path, scope, got.text)
            key = having[r.scopes][0]
            got = await client.request(
                r.method, _url(r.path), headers={"Authorization": f"Bearer {key}"}, **body
            )
            assert got.status_code not in (401, 403), (r.method, r.path, got.text)
            checked += 1
    assert checked > 0

"""What every route of an app declares about who may call it, read from its dependency tree:
the scopes of its `auth.requires` dependencies, or the reason of its `auth.public` marker. The
route table of docs/api-scopes.md and the route walk of tests/e2e are built from this, so a
route declaring neither is caught by a test rather than by a reader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from prometheus_fastapi_instrumentator.routing import _effective_routes

from servicekit.auth import Public, Requires


@dataclass(frozen=True)
class RouteAccess:
    method: str
    path: str
    route: Any
    scopes: tuple[str, ...]
    public: str | None  # the reason, for a route that takes no key


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _walk(sub)


def route_access(app: FastAPI) -> list[RouteAccess]:
    """Every (method, path) the app serves through a FastAPI route (FastAPI's own /docs and
    /openapi.json are not routes of the service), as the app serves it."""
    found: list[RouteAccess] = []
    route: Any
    for route in _effective_routes(list(app.routes)):
        # FastAPI's routes and the included routers' (flattened: prefix and the router's
        # dependencies applied), told from Starlette's own (/docs, /openapi.json) by their
        # dependency tree.
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            continue
        tree = list(_walk(dependant))
        scopes = tuple(dict.fromkeys(d.call.scope for d in tree if isinstance(d.call, Requires)))
        reasons = [d.call.reason for d in tree if isinstance(d.call, Public)]
        for method in sorted(getattr(route, "methods", None) or ()):
            found.append(
                RouteAccess(method, route.path, route, scopes, reasons[0] if reasons else None)
            )
    return found

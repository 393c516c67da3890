"""Domain errors and their one mapping to RFC 9457 problem+json responses."""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    status = 400
    title = "Bad request"
    # Response headers the refusal carries (a 429's Retry-After).
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidInput(DomainError):
    status = 422
    title = "Invalid input"


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def domain_problem(exc: DomainError, instance: str) -> JSONResponse:
    """The answer to a refusal raised by a handler or a dependency."""
    return problem(
        exc.status, exc.title, exc.detail, instance=instance, field=exc.field, headers=exc.headers
    )


def internal_error(instance: str) -> JSONResponse:
    """The answer to an unexpected error (logged by whoever caught it)."""
    return problem(500, "Internal error", "An unexpected error occurred.", instance=instance)


def _field_name(loc: tuple[Any, ...]) -> str:
    # ("body", "amount") -> "amount"; ("query", "limit") -> "limit"; keep nested paths dotted.
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return domain_problem(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_name(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return problem(
            422,
            "Invalid input",
            f"{first['field']}: {first['message']}",
            instance=request.url.path,
            field=first["field"],
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return problem(exc.status_code, title, str(exc.detail), instance=request.url.path)

    # Postgres text cannot hold NUL: whatever input carried one is refused here, once for every
    # route, rather than by a check in every body model (nothing on the hot path pays for it).
    @app.exception_handler(asyncpg.CharacterNotInRepertoireError)
    async def _nul(request: Request, exc: asyncpg.CharacterNotInRepertoireError) -> JSONResponse:
        field = await nul_pointer(request)
        return problem(
            422,
            "Invalid input",
            "text may not contain a NUL character",
            instance=request.url.path,
            field=field,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return internal_error(request.url.path)


async def nul_pointer(request: Request) -> str:
    """The JSON pointer of the first input carrying a NUL: a path parameter, a query parameter
    (`/<name>`) or a string (or key) of the JSON body; "" (the whole input) when none is found."""
    for name, value in [*request.path_params.items(), *request.query_params.items()]:
        if "\x00" in str(value) or "\x00" in name:
            return f"/{name}"
    try:
        body = json.loads(await request.body())
    except (RuntimeError, ValueError):
        return ""
    return _nul_in(body, "") or ""


def _nul_in(value: Any, at: str) -> str | None:
    if isinstance(value, str):
        return at if "\x00" in value else None
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            key = str(k).replace("~", "~0").replace("/", "~1")
            if "\x00" in str(k):
                return f"{at}/{key}"
            items.append((key, v))
    elif isinstance(value, list):
        items = [(str(i), v) for i, v in enumerate(value)]
    for key, v in items:
        found = _nul_in(v, f"{at}/{key}")
        if found is not None:
            return found
    return None

"""Domain errors and their one mapping to RFC 9457 problem+json responses.

Every answer that is not a success is a problem document whose `type` names the kind of error
(`PROBLEM_TYPES`, one URI each, listed in docs/problems.md) and whose `field`, when one input is
at fault, is a JSON pointer (RFC 6901) to it: into the body (`/order_id`, `/rules/0/amount`), or,
for a path, query or header parameter, the parameter's name as a one-step pointer
(`/program_id`, `/limit`, `/Idempotency-Key`); `errors[].in` says which. A body that is not
JSON at all is `malformed-json`, without a field."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from referral_events.database_errors import INFRASTRUCTURE_ERRORS

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# Problem types are identifiers (RFC 9457 §3.1.1): documented in docs/problems.md, not served.
PROBLEM_BASE = "https://referral.dev/problems/"

# Every kind of error a service answers with: slug -> (status, title). A DomainError subclass
# names its slug in `type`; tests/e2e/test_problem_types.py checks the docs list them all.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "bad-request": (400, "Bad request"),
    # 422 as FastAPI always answered it (clients and tests rely on the status); the type says
    # what is wrong.
    "malformed-json": (422, "Malformed JSON"),
    "unauthorized": (401, "Unauthorized"),
    "forbidden": (403, "Forbidden"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "conflict": (409, "Conflict"),
    "body-too-large": (413, "Payload too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "validation": (422, "Invalid input"),
    "rate-limited": (429, "Too many requests"),
    "internal": (500, "Internal error"),
    "unavailable": (503, "Service unavailable"),
    "http-error": (0, "Error"),
}


def type_uri(slug: str) -> str:
    return PROBLEM_BASE + slug


class DomainError(Exception):
    status = 400
    title = "Bad request"
    # The kind of error: a key of PROBLEM_TYPES (or of a service's own, registered with
    # `register_type`), one documented URI each.
    type = "bad-request"
    # Response headers the refusal carries (a 429's Retry-After).
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        # A pointer whatever form it was given in; the whole body ("") is no field.
        self.field = pointer(field) or None if field is not None else None


def register_type(slug: str, status: int, title: str) -> str:
    """A service's own kind of error (its DomainError subclass's `type`)."""
    known = PROBLEM_TYPES.setdefault(slug, (status, title))
    if known != (status, title):
        raise ValueError(f"problem type {slug} is already {known}")
    return slug


class InvalidInput(DomainError):
    status = 422
    title = "Invalid input"
    type = "validation"


class NotFound(DomainError):
    status = 404
    title = "Not found"
    type = "not-found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"
    type = "conflict"


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"
    type = "unauthorized"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"
    type = "forbidden"


class PayloadTooLarge(DomainError):
    status = 413
    title = "Payload too large"
    type = "body-too-large"


_SEGMENT = re.compile(r"\[(\d+)\]")


def pointer(field: str | int | tuple[Any, ...] | list[Any]) -> str:
    """`field` as a JSON pointer. A pointer stays as it is; a path of keys (`("rules", 0,
    "amount")`) or a dotted name (`rules.0.amount`, `rules[0].amount`) becomes
    `/rules/0/amount`; a parameter's name, `/name`. `~` and `/` inside a key are escaped."""
    if isinstance(field, tuple | list):
        parts = [str(p) for p in field]
    else:
        text = str(field)
        if text == "" or text.startswith("/"):
            return text
        if "-" in text or text[:1].isupper():
            parts = [text]  # a header's name (Idempotency-Key): one step
        else:
            parts = _SEGMENT.sub(r".\1", text).split(".")
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    kind: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_uri(kind or _kind_of_status(status)),
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


_BY_STATUS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "validation",
    429: "rate-limited",
    500: "internal",
}


def _kind_of_status(status: int) -> str:
    return _BY_STATUS.get(status, "http-error")


def domain_problem(exc: DomainError, instance: str) -> JSONResponse:
    """The answer to a refusal raised by a handler or a dependency."""
    return problem(
        exc.status,
        exc.title,
        exc.detail,
        kind=exc.type,
        instance=instance,
        field=exc.field,
        headers=exc.headers,
    )


def internal_error(instance: str) -> JSONResponse:
    """The answer to an unexpected error (logged by whoever caught it)."""
    return problem(
        500, "Internal error", "An unexpected error occurred.", kind="internal", instance=instance
    )


# Seconds a client waits before the same request again (same Idempotency-Key) when the database
# is away: a restart takes seconds; an outage is retried until it ends.
UNAVAILABLE_RETRY_AFTER_S = 2


def unavailable(instance: str) -> JSONResponse:
    """The answer while the database cannot be reached: the same request again later (same
    Idempotency-Key) may succeed, where a 500 would say the request itself failed."""
    return problem(
        503,
        "Service unavailable",
        "the database cannot be reached; send the same request again later",
        kind="unavailable",
        instance=instance,
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
    )


def body_too_large(limit: int, instance: str) -> JSONResponse:
    """The answer to a body over the route's limit (servicekit.bodylimit)."""
    return problem(
        413,
        "Payload too large",
        f"the request body exceeds {limit} bytes",
        kind="body-too-large",
        instance=instance,
    )


def validation_field(loc: tuple[Any, ...]) -> tuple[str | None, str]:
    """A pydantic error's `loc` as (JSON pointer, where): ("body", "rules", 0, "amount") ->
    ("/rules/0/amount", "body"); ("query", "limit") -> ("/limit", "query"); the whole body
    ("body",) -> (None, "body")."""
    if not loc:
        return None, "body"
    where = str(loc[0]) if loc[0] in ("body", "query", "path", "header", "cookie") else "body"
    rest = loc[1:] if loc[0] == where else loc
    if where == "header" and rest:
        # FastAPI names a header by its lower-case alias; the API spells it as documented.
        rest = ("-".join(w.capitalize() for w in str(rest[0]).split("-")), *rest[1:])
    return (pointer(tuple(rest)) if rest else None), where


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return domain_problem(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            # FastAPI's loc here is a character offset, not a field: say what is wrong instead.
            ctx = next((e.get("ctx") or {} for e in errors if e.get("type") == "json_invalid"), {})
            return problem(
                422,
                "Malformed JSON",
                f"the body is not valid JSON: {ctx.get('error', 'decode error')}",
                kind="malformed-json",
                instance=request.url.path,
            )
        listed: list[dict[str, Any]] = []
        for e in errors:
            field, where = validation_field(tuple(e.get("loc", ())))
            item: dict[str, Any] = {"message": e.get("msg", "invalid"), "in": where}
            if field is not None:
                item["field"] = field
            listed.append(item)
        first = listed[0] if listed else {"message": "invalid", "in": "body"}
        field = first.get("field")
        return problem(
            422,
            "Invalid input",
            f"{field}: {first['message']}" if field else f"body: {first['message']}",
            kind="validation",
            instance=request.url.path,
            field=field,
            errors=listed,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _kind_of_status(exc.status_code)
        title = PROBLEM_TYPES[kind][1] if kind != "http-error" else "Error"
        return problem(
            exc.status_code, title, str(exc.detail), kind=kind, instance=request.url.path
        )

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

    # The database away (the errors an inbox consumer retries without end): 503, so the
    # client sends the same request again rather than taking it as failed.
    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
        return unavailable(request.url.path)

    for error in INFRASTRUCTURE_ERRORS:
        app.add_exception_handler(error, _unavailable)

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

"""HTTP routes of the advocate's side. The merchant's backend (API key) mints advocate tokens and
sets the program's portal settings; a browser holding a token reads GET /v1/me (and its QR code)
from the program's allowed origins only; the widget and storefront scripts are public.

A token reaches only the /v1/me routes: the API-key routes never accept one (it is no key), and
these routes accept nothing but a token."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Depends, Query, Request, Response

from link_service import qr
from link_service.portal import domain, front, handlers
from link_service.portal.schemas import (
    MeOut,
    PortalSettingsIn,
    PortalSettingsOut,
    StorefrontConfig,
    TokenIn,
    TokenOut,
)
from link_service.web import Rt, links, settings
from servicekit.asgi import header_map
from servicekit.auth import Principal, presented_key, public, requires
from servicekit.front import RawAnswer
from servicekit.problems import Forbidden, NotFound

router = APIRouter()

WIDGET_VERSION = "v1"
_SCRIPTS = ("referral-widget.js", "storefront.js")
_ADVOCATE_TOKEN = public("an advocate token (a signed JWT), never an API key")
_PREFLIGHT = public("a CORS preflight carries no credentials")
_STATIC = public("the widget and the storefront snippet: static scripts for any page")


async def advocate_claims(request: Request) -> domain.AdvocateClaims:
    """FastAPI dependency: the advocate a bearer token speaks for (401 without a valid one)."""
    tokens: domain.VerifiedTokens = request.app.state.advocate_tokens
    return tokens.verify(presented_key(header_map(request.scope)), datetime.now(UTC))


Advocate = Annotated[domain.AdvocateClaims, Depends(advocate_claims)]


def _cors(response: Response, origin: str | None, allowed: list[str]) -> None:
    """The CORS answer of the /v1/me routes (front.check_origin: 403 for a foreign origin).
    No Origin: not a cross-origin browser call."""
    response.headers["Vary"] = "Origin"
    if origin is not None:
        front.check_origin(origin, allowed)
        response.headers["Access-Control-Allow-Origin"] = origin


# ---------------------------------------------------------------------------- merchant side


@router.post(
    "/v1/advocates/{advocate_id}/tokens",
    status_code=201,
    response_model=TokenOut,
    tags=["advocate portal"],
)
async def mint_token(
    advocate_id: str,
    who: Annotated[Principal, requires("advocates:write")],
    rt: Rt,
    response: Response,
    body: TokenIn | None = None,
) -> TokenOut:
    """A short-lived, read-only token for one advocate (GET /v1/me, the widget)."""
    s = settings(rt)
    async with rt.transaction() as conn:
        token, claims = await handlers.mint_token(
            conn,
            who.tenant_id,
            advocate_id,
            body.ttl_seconds if body else None,
            s.advocate_token_keys,
            s.advocate_token_ttl_seconds,
            datetime.now(UTC),
        )
    response.headers["Cache-Control"] = "no-store"
    return TokenOut(
        token=token,
        advocate_id=claims.advocate_id,
        program_id=claims.program_id,
        expires_at=claims.expires_at,
    )


def _settings_out(row: asyncpg.Record) -> PortalSettingsOut:
    return PortalSettingsOut(
        program_id=row["program_id"],
        allowed_origins=list(row["allowed_origins"]),
        auto_enroll=row["auto_enroll"],
        cookie_days=row["cookie_days"],
        reminder_max=row["reminder_max"],
        reminder_interval_days=row["reminder_interval_days"],
        updated_at=row["updated_at"],
    )


@router.get(
    "/v1/programs/{program_id}/portal", response_model=PortalSettingsOut, tags=["advocate portal"]
)
async def get_portal_settings(
    program_id: str, who: Annotated[Principal, requires("programs:read")], rt: Rt
) -> PortalSettingsOut:
    async with rt.transaction() as conn:
        row = await handlers.get_settings(conn, who.tenant_id, program_id)
    return _settings_out(row)


@router.put(
    "/v1/programs/{program_id}/portal", response_model=PortalSettingsOut, tags=["advocate portal"]
)
async def put_portal_settings(
    program_id: str,
    body: PortalSettingsIn,
    who: Annotated[Principal, requires("programs:write")],
    rt: Rt,
) -> PortalSettingsOut:
    """Browser origins allowed to read /v1/me, auto-enrollment of converted friends, and how
    long the storefront snippet keeps a visit's referral evidence."""
    async with rt.transaction() as conn:
        row = await handlers.put_settings(conn, who.tenant_id, program_id, body)
    return _settings_out(row)


# ---------------------------------------------------------------------------- advocate side


@router.options(front.PATH, include_in_schema=False, dependencies=[_PREFLIGHT])
@router.options(front.QR_PATH, include_in_schema=False, dependencies=[_PREFLIGHT])
async def me_preflight(request: Request, rt: Rt) -> Response:
    origin = request.headers.get("origin")
    async with rt.pool.acquire() as conn:  # one read: no transaction around it
        allowed = await handlers.preflight_allowed(conn, origin)
    if not allowed or origin is None:
        raise Forbidden(f"origin '{origin}' may not call this API", field="/headers/origin")
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET",
            "Access-Control-Allow-Headers": "authorization",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        },
    )


@router.get(
    front.PATH, response_model=MeOut, tags=["advocate portal"], dependencies=[_ADVOCATE_TOKEN]
)
async def get_me(who: Advocate, rt: Rt, request: Request) -> Response:
    """Everything a refer-a-friend page shows, for the advocate the token names (advocate
    token only; an API key is refused)."""
    # Answered by the front door's code (portal.front), which serves this route first.
    pool = request.app.state.portal_reads.pool
    return RawAnswer(lambda scope, send: front.answer(rt, pool, who, scope, send))


@router.get(
    front.QR_PATH,
    dependencies=[_ADVOCATE_TOKEN],
    tags=["advocate portal"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}},
)
async def get_me_qr(
    who: Advocate,
    rt: Rt,
    request: Request,
    format: Literal["png", "svg"] = "svg",
    scale: Annotated[int, Query(ge=1, le=40)] = 6,
) -> Response:
    """The QR code of the token's advocate's link (the same rendering as the API-key route)."""
    async with rt.transaction() as conn:
        view = await handlers.token_holder(conn, who)
        allowed = await handlers.allowed_origins(conn, who.program_id)
        code = view.code
    link = links(rt).link(code)
    response = Response(
        await qr.render(link, format, scale),
        media_type=qr.MEDIA_TYPES[format],
        headers={"Cache-Control": "private, max-age=300", "X-Link": link},
    )
    _cors(response, request.headers.get("origin"), allowed)
    return response


# ---------------------------------------------------------------------------- public scripts


@router.get(
    "/widget/v1/programs/{program_id}/storefront.json",
    dependencies=[_STATIC],
    response_model=StorefrontConfig,
    tags=["advocate portal"],
)
async def storefront_config(program_id: str, rt: Rt, response: Response) -> StorefrontConfig:
    """What the storefront snippet needs (public, nothing secret): how long to keep evidence."""
    async with rt.transaction() as conn:
        row = await handlers.storefront_config(conn, program_id)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = "public, max-age=300"
    return StorefrontConfig(program_id=program_id, cookie_days=row["cookie_days"])


@router.get(f"/widget/{WIDGET_VERSION}/{{name}}", include_in_schema=False, dependencies=[_STATIC])
async def script(name: str) -> Response:
    """The widget and the storefront snippet, versioned by path (v2 would sit beside v1)."""
    if name not in _SCRIPTS:
        raise NotFound(f"no script '{name}'", field="/name")
    body = resources.files("link_service.portal").joinpath("static", name).read_bytes()
    return Response(
        body,
        media_type="text/javascript; charset=utf-8",
        headers={
            "Cache-Control": "public, max-age=3600",
            "Access-Control-Allow-Origin": "*",
            "X-Content-Type-Options": "nosniff",
        },
    )

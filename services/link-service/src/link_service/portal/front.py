"""GET /v1/me in front of FastAPI: the refer-a-friend page's one call, its hot path.

A plain ASGI app, the first of link-service's front doors (servicekit.front; the redirect's is
behind it), answers a GET /v1/me that carries a valid advocate token itself, standing in for
the route api.get_me, which answers with the same code (`answer`) when the front door is off.
Per request that skips FastAPI's routing, dependency injection and middleware stack, which cost
more CPU than reading and writing the page. It records the route's request metrics and opens
its server span as FastAPI's instrumentation would (`FrontRoute.respond`).

A request without a valid token goes on to FastAPI unchanged and is refused there (401) exactly
as without a front door; a refusal after the token (403: the token names no advocate of its
tenant and program, or a foreign origin) is the problem+json the app's handlers write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
from starlette.datastructures import URLPath
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from link_service.portal import domain, handlers
from link_service.portal.schemas import MeOut
from link_service.redirect.front import client_ip
from link_service.sightings import handlers as sightings
from link_service.web import links, settings
from servicekit.asgi import Headers, header_map, send_response
from servicekit.auth import presented_key
from servicekit.front import FastAPIEntry, FrontRoute
from servicekit.problems import Forbidden, Unauthorized
from servicekit.runtime import Runtime

PATH = "/v1/me"
QR_PATH = "/v1/me/qr"

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
_VARY = (b"vary", b"Origin")


class PageReads:
    """The connections GET /v1/me reads with: a small pool of its own whose connections act for
    every tenant from the start, as the route does (it is public: the token names the tenant),
    so a page costs one round trip, not three (the tenant set on acquiring a connection from the
    service's pool, the read, the session reset on releasing it). A worker: the pool opens as
    the service starts and closes as it stops; until it is open, the service's pool serves."""

    def __init__(self, rt: Runtime, size: int) -> None:
        self._rt = rt
        self._size = size
        self._pool: asyncpg.Pool | None = None
        self._stopped = asyncio.Event()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool or self._rt.pool

    async def run(self) -> None:
        pool = await self._rt.open_pool(
            min_size=1, max_size=self._size, role="portal", across_tenants=True
        )
        self._pool = pool
        try:
            await self._stopped.wait()
        finally:
            self._pool = None
            await pool.close()

    async def stop(self) -> None:
        self._stopped.set()


class MeFront:
    """Answers GET /v1/me itself when the request carries a valid advocate token; everything
    else goes to `next_app` (the redirect's front door, then FastAPI)."""

    def __init__(
        self,
        app: FastAPIEntry,
        next_app: ASGIApp,
        tokens: domain.VerifiedTokens,
        reads: PageReads,
        registry: object = None,
    ) -> None:
        self.next_app = next_app
        self.tokens = tokens
        self.reads = reads
        self.rt: Runtime = app.app.state.runtime
        self._route = FrontRoute(app, "GET", PATH, registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            await self.next_app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = header_map(scope)
        try:
            who = self.tokens.verify(presented_key(headers), datetime.now(UTC))
        except Unauthorized:
            await self.next_app(scope, receive, send)
            return
        rt, pool = self.rt, self.reads.pool
        await self._route.respond(
            scope, send, lambda: answer(rt, pool, who, scope, send, headers), started, headers
        )


async def answer(
    rt: Runtime,
    pool: asyncpg.Pool,
    who: domain.AdvocateClaims,
    scope: Scope,
    send: Send,
    headers: Headers | None = None,
) -> int:
    """The page of the advocate the verified token names: the read model in one statement,
    refused (403) for an origin the token's program does not allow, the sighting recorded,
    then the JSON sent. Returns the status."""
    if headers is None:
        headers = header_map(scope)
    public = links(rt)
    # One read statement: no transaction to open and commit around it.
    async with pool.acquire() as conn:
        me = await handlers.me(conn, who, public)
    origin = headers.get(b"origin")
    response_headers = [_JSON, _NO_STORE, _VARY]
    if origin is not None:  # a cross-origin browser call
        check_origin(origin.decode("latin-1"), me.allowed_origins)
        response_headers.append((b"access-control-allow-origin", origin))
    out = _me_out(me, public.link(me.page["code"]), qr_url(scope, headers))
    await _sighted(rt, scope, headers, who)
    await send_response(send, 200, response_headers, out.__pydantic_serializer__.to_json(out))
    return 200


def check_origin(origin: str, allowed: Sequence[str]) -> None:
    """A page of an allowed origin may read the answer; any other origin is refused (403), so
    a stolen token is no use from a foreign page."""
    if not domain.origin_allowed(origin, allowed):
        raise Forbidden(f"origin '{origin}' may not read this program's advocate data")


_QR_URLS: dict[tuple[object, ...], str] = {}


def qr_url(scope: Scope, headers: Headers) -> str:
    """The absolute URL of the advocate's QR code as this request reached us (what the route's
    `request.url_for` gives, without looking the route up), remembered by what it is made of
    (a few hosts at most; the Host header is the client's, so the memory is bounded)."""
    key = (
        scope.get("scheme"),
        headers.get(b"host"),
        scope.get("server"),
        scope.get("app_root_path", scope.get("root_path")),
    )
    url = _QR_URLS.get(key)
    if url is None:
        if len(_QR_URLS) >= 1000:
            _QR_URLS.clear()
        url = _QR_URLS[key] = str(URLPath(QR_PATH).make_absolute_url(Request(scope).base_url))
    return url


def _me_out(me: handlers.Me, link: str, qr: str) -> MeOut:
    """The answer, validated by its model in one pass over plain data (not a model built per
    referral, share link and reward)."""
    page = me.page
    return MeOut.model_validate(
        {
            "advocate_id": page["id"],
            "program_id": page["program_id"],
            "program_name": page["program_name"],
            "locale": page["locale"] or page["program_default_locale"],
            "code": page["code"],
            "link": link,
            "qr_url": qr,
            "share": [
                {
                    "channel": s.channel,
                    "url": s.url,
                    "message": s.message,
                    "intent_url": s.intent_url,
                }
                for s in me.share
            ],
            "stats": {
                "clicks": page["clicks"],
                "friends_joined": page["joined"],
                "friends_purchased": page["purchased"],
            },
            "rewards": [
                {"unit": unit, "pending": pending, "available": available, "redeemed": redeemed}
                for unit, pending, available, redeemed in zip(
                    page["reward_units"],
                    page["pending"],
                    page["available"],
                    page["redeemed"],
                    strict=True,
                )
            ],
            "referrals": [
                {
                    "friend": friend,
                    "status": domain.referral_status(
                        signed_up=signed_up,
                        purchased=purchased,
                        rewarded=rewarded,
                        refunded=refunded,
                    ),
                    "since": since,
                }
                for friend, signed_up, purchased, rewarded, refunded, since in zip(
                    page["friends"],
                    page["signed_up"],
                    page["purchased_each"],
                    page["rewarded"],
                    page["refunded"],
                    page["since"],
                    strict=True,
                )
            ],
            "progress": {
                "successful_referrals": page["successful"],
                "last_milestone": page["milestone"],
                # Milestone thresholds are reward-service's rules, not published as events yet.
                "next_milestone": None,
            },
        }
    )


_SEEN = sightings.SeenRecently()


async def _sighted(rt: Runtime, scope: Scope, headers: Headers, who: domain.AdvocateClaims) -> None:
    """The advocate opened their page: where from (network, and the widget's device id if it
    sends one) is a sighting for attribution's self-referral check. A page opened again from
    the same place costs no write (this replica's memory, then the table's one a day)."""
    s = settings(rt)
    ip_header = s.client_ip_header.lower().encode() if s.client_ip_header else None
    ip = client_ip(scope, headers, ip_header, s.trusted_proxy_hops)
    device = headers.get(b"x-device-id")
    key = s.ip_hash_key.encode()
    ip_h = sightings.hashed(key, ip)
    device_h = sightings.hashed(key, device.decode("latin-1")[:200] if device else None)
    if not (ip_h or device_h) or not _SEEN.fresh((who.advocate_id, ip_h, device_h)):
        return
    async with rt.transaction() as conn:
        await sightings.record(
            conn,
            tenant_id=who.tenant_id,
            advocate_id=who.advocate_id,
            program_id=who.program_id,
            source="portal",
            ip_hash=ip_h,
            device_hash=device_h,
            now=datetime.now(UTC),
        )

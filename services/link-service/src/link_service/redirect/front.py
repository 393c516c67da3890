"""The public redirect `/r/{code}[/{channel}]`: the hot path.

It runs as a plain ASGI middleware in front of FastAPI (no routing, dependency injection,
FastAPI telemetry or per-request tracing spans: those cost more than the redirect itself); with
the front door off (FRONT_DOOR=false) api.py's /r/ routes answer with the same code (`answer`).
Code lookups come from a per-replica cache (CodeCache) that link-service's own events
invalidate (workers.CacheInvalidator) and the API invalidates on its own writes. The click and
its link.clicked event are handed to the group-commit writer (workers.ClickWriter); the 302 is
sent only after that batch committed, so a redirect that was answered with a click id always
has its click and event in Postgres.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import orjson
from starlette.types import Receive, Scope, Send

from link_service import domain
from link_service.events import CLICKS
from link_service.redirect.cache import CodeTarget
from link_service.redirect.state import PROBE_PLAN, LinkState
from referral_events.contracts.link import LinkClicked
from servicekit.asgi import Headers, header_map, send_response
from servicekit.front import FastAPIEntry, FrontRoute

log = logging.getLogger(__name__)

NOT_FOUND_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>Link not found</title>
</head><body><h1>This referral link does not exist</h1>
<p>Check the link you were sent, or ask your friend for a new one.</p></body></html>"""


async def _not_found(send: Send, head: bool, rate: list[tuple[bytes, bytes]] | None) -> None:
    await send_response(
        send,
        404,
        [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"cache-control", b"no-store"),
            *(rate or ()),
        ],
        b"" if head else NOT_FOUND_PAGE,
    )


# Every answer under /r/ is counted as this one route, which the redirect dashboard and alerts
# read.
HANDLER = "/r/{code}"
# The routes (api.py) the redirect answers for: a code, a code and its share channel, and any
# other path under /r/ (the not-found page).
ROUTES = ("/r/{code}", "/r/{code}/{channel}", "/r/{path:path}")


class RedirectMiddleware:
    """Answers GET/HEAD /r/... itself; everything else goes to the wrapped app.

    It is the app's front door (servicekit.front), so a redirect pays for none of FastAPI's
    per-request work or the API's middleware (tracing, metrics, body limits). It stands in for
    the /r/ routes of api.py, which answer with the same code (`answer`) when the front door is
    off, and applies what they declare (nothing today: the redirect is public). It records the
    request metrics the stack's Prometheus middleware would (`http_requests_total` and
    `http_request_duration_seconds`, all under handler `/r/{code}`). Redirects get no tracing
    span: a click starts no trace worth following."""

    def __init__(self, app: FastAPIEntry, state: LinkState, registry: Any = None) -> None:
        self.app = app
        self.state = state
        self._code, self._channel, self._other = (
            FrontRoute(app, "GET", path, registry, handler=HANDLER, traced=False) for path in ROUTES
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith("/r/")
            and scope["method"] in ("GET", "HEAD")
        ):
            started = time.perf_counter()
            state = self.state
            await self._route(scope["path"]).respond(
                scope, send, lambda: answer(state, scope, send), started
            )
            return
        await self.app(scope, receive, send)

    def _route(self, path: str) -> FrontRoute:
        """The route of ROUTES that FastAPI would match `path` to."""
        rest = path[3:]
        if "/" not in rest:
            return self._code if rest else self._other
        code, _, channel = rest.partition("/")
        return self._channel if code and channel and "/" not in channel else self._other


async def _unknown(state: LinkState, scope: Scope, send: Send, head: bool) -> int:
    """The not-found page, once per token of the client's unknown-code bucket; past it, 429
    (raised: answered as problem+json with Retry-After by the front door or the app)."""
    client = (
        client_ip(scope, header_map(scope), state.client_ip_header, state.trusted_proxy_hops) or "-"
    )
    # The client's unknown-code bucket, in RateLimit-* headers as every limited answer has.
    rate = state.probes.check(client, PROBE_PLAN)
    await _not_found(send, head, rate)
    return 404


async def answer(state: LinkState, scope: Scope, send: Send) -> int:
    """Answer a GET or HEAD under /r/: the redirect, or the not-found page. Returns the status."""
    head = scope["method"] == "HEAD"
    parts = scope["path"][3:].split("/")
    if len(parts) > 2:
        return await _unknown(state, scope, send, head)
    code = unquote(parts[0])
    channel = parts[1] if len(parts) == 2 and parts[1] in domain.SHARE_CHANNELS else None
    if not domain.is_well_formed_code(code):
        return await _unknown(state, scope, send, head)
    target = await state.lookup(domain.code_key(code))
    if target is None:
        return await _unknown(state, scope, send, head)

    raw_query = scope["query_string"]
    query = parse_qsl(raw_query.decode("latin-1")) if raw_query else []
    utm = [(k, v) for k, v in query if k.startswith("utm_")]
    if channel is not None and not utm:
        utm = [("utm_source", channel), ("utm_medium", "referral")]
    now = datetime.now(UTC)
    live = domain.program_is_live(target.program_status, target.starts_at, target.ends_at, now)
    deep_link = next((v for k, v in query if k == "to"), None) if live else None

    # Where it goes is settled before the click is recorded: nothing recorded for an answer
    # that was never given.
    if live:
        dest = domain.redirect_target(target.landing_url, target.allowed_domains, deep_link)
    else:
        # A paused or ended program still sends people somewhere sensible.
        dest = target.fallback_url or target.landing_url
    click_id: str | None = None
    if not head:
        click_id = await _record(state, scope, target, channel, live, now)
    if deep_link or utm or click_id is None:
        location = domain.landing_url_for_click(dest, target.code, click_id, utm)
    else:
        prefix, fragment = target.landing_parts if live else target.fallback_parts
        location = f"{prefix}ref={target.code}&click_id={click_id}{fragment}"
    if not location.isascii() or " " in location:
        location = quote(location, safe=":/?#[]@!$&'()*+,;=%~")
    await send_response(
        send, 302, [(b"location", location.encode()), (b"cache-control", b"no-store")], b""
    )
    return 302


async def _record(
    state: LinkState,
    scope: Scope,
    target: CodeTarget,
    channel: str | None,
    live: bool,
    now: datetime,
) -> str | None:
    """The click id once its click and event committed; None if they could not be."""
    headers = header_map(scope)
    client = client_ip(scope, headers, state.client_ip_header, state.trusted_proxy_hops)
    info = domain.classify_user_agent(_text(headers.get(b"user-agent")))
    reason = domain.inactive_reason(
        program_live=live, advocate_blocked=target.advocate_blocked, is_bot=info.is_bot
    )
    click_id = new_click_id()
    referrer = domain.referrer_host(_text(headers.get(b"referer")))
    ip = domain.ip_hash(state.ip_key, client)
    row = (
        click_id,
        target.tenant_id,
        target.code,
        target.program_id,
        target.advocate_id,
        channel,
        now,
        info.user_agent_family,
        info.device_class,
        referrer,
        ip,
        info.is_bot,
        reason is None,
        reason,
    )
    assert state.writer is not None
    event = click_event_json(row, target.tenant_id)
    ok = await state.writer.record(row, CLICKS.serialised_row(click_id, target.code, event))
    return click_id if ok else None


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def new_click_id() -> str:
    # Hex of 16 random bytes: as unguessable as servicekit.ids.new_id, at a fraction of the
    # cost of its base32 (this runs on every redirect).
    return "clk_" + os.urandom(16).hex()


def click_event_json(row: tuple[Any, ...], tenant_id: str) -> bytes:
    """The link.clicked CloudEvent for a click row, serialised directly: the same document
    new_event(LinkClicked(...)).to_json() gives (a unit test holds them equal), without two
    pydantic validations per redirect, and with orjson (the stdlib encoder cost more than the
    rest of the click)."""
    (click_id, _, code, program_id, advocate_id, channel, now, family, device, referrer, ip,
     is_bot, counts, reason) = row  # fmt: skip
    clicked_at = now.isoformat().replace("+00:00", "Z")
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": click_id,
            "source": CLICKS.source,
            "type": LinkClicked.TYPE,
            "time": clicked_at,
            "subject": code,
            "datacontenttype": "application/json",
            "tenantid": tenant_id,
            "data": {
                "click_id": click_id,
                "code": code,
                "advocate_id": advocate_id,
                "program_id": program_id,
                "clicked_at": clicked_at,
                "channel": channel,
                "user_agent_family": family,
                "device_class": device,
                "referrer_host": referrer,
                "ip_hash": ip,
                "is_bot": is_bot,
                "counts": counts,
                "inactive_reason": reason,
            },
        }
    )


def client_ip(scope: Scope, headers: Headers, ip_header: bytes | None, hops: int) -> str | None:
    """The visitor's address: the entry of `ip_header` the outermost of `hops` trusted proxies
    appended (counted from the right; entries further left are the client's own claims), or
    the TCP peer when no header is configured or it holds fewer entries than trusted hops."""
    if ip_header is not None:
        forwarded = headers.get(ip_header)
        entries = [e.strip() for e in forwarded.decode("latin-1").split(",")] if forwarded else []
        if len(entries) >= hops and entries[-hops]:
            return entries[-hops]
    client = scope.get("client")
    return str(client[0]) if client else None

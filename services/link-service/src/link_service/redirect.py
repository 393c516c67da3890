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

import asyncio
import logging
import os
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote

import asyncpg
import orjson
from starlette.types import Receive, Scope, Send

from link_service import domain, repository
from link_service.events import CLICKS
from referral_events.contracts.link import LinkClicked
from servicekit.asgi import Headers, header_map, send_response
from servicekit.front import FastAPIEntry, FrontRoute

if TYPE_CHECKING:
    from link_service.workers import CacheInvalidator, ClickWriter, EnrollmentWorker
    from servicekit.runtime import Runtime

log = logging.getLogger(__name__)

NOT_FOUND_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>Link not found</title>
</head><body><h1>This referral link does not exist</h1>
<p>Check the link you were sent, or ask your friend for a new one.</p></body></html>"""


@dataclass(frozen=True)
class CodeTarget:
    code: str
    tenant_id: str
    program_id: str
    advocate_id: str
    program_status: str
    starts_at: datetime | None
    ends_at: datetime | None
    landing_url: str
    fallback_url: str | None
    allowed_domains: tuple[str, ...]
    advocate_blocked: bool
    # landing / fallback URL split once (domain.click_url_parts) for the common case
    landing_parts: tuple[str, str] = ("", "")
    fallback_parts: tuple[str, str] = ("", "")

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> CodeTarget:
        fallback = row["fallback_url"] or row["landing_url"]
        return cls(
            code=row["code"],
            tenant_id=row["tenant_id"],
            program_id=row["program_id"],
            advocate_id=row["advocate_id"],
            program_status=row["program_status"],
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            landing_url=row["landing_url"],
            fallback_url=row["fallback_url"],
            allowed_domains=tuple(row["allowed_domains"]),
            advocate_blocked=row["advocate_blocked"],
            landing_parts=domain.click_url_parts(row["landing_url"]),
            fallback_parts=domain.click_url_parts(fallback),
        )


class CodeCache:
    """Bounded LRU with a TTL, indexed by program and advocate so an event about either drops
    every code it affects. Not thread-safe; it lives on the event loop.

    A lookup that raced with an invalidation must not store what it read before it: `put`
    takes the generation seen when the lookup started and stores nothing if any invalidation
    happened since.

    Events drop an entry the moment what it holds changes, so the TTL is only a safety net
    for a missed event. An expired entry is therefore kept for one more TTL and may answer
    (`stale`) while a single refresh runs; TTLs are jittered so entries loaded together (a
    warm-up, a popular campaign) do not all expire in the same instant."""

    def __init__(self, maxsize: int, ttl: float, negative_ttl: float) -> None:
        self._max = maxsize
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._entries: OrderedDict[str, tuple[float, CodeTarget | None]] = OrderedDict()
        self._by_program: dict[str, set[str]] = {}
        self._by_advocate: dict[str, set[str]] = {}
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[bool, CodeTarget | None]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            if entry is not None and self._past_grace(entry):
                self._drop(key)
            self.misses += 1
            return False, None
        self._entries.move_to_end(key)
        self.hits += 1
        return True, entry[1]

    def stale(self, key: str) -> CodeTarget | None:
        """An expired (but not invalidated) target still within its grace TTL, else None."""
        entry = self._entries.get(key)
        if entry is None or self._past_grace(entry):
            return None
        return entry[1]

    def _past_grace(self, entry: tuple[float, CodeTarget | None]) -> bool:
        """Whether `stale` may no longer answer with it (unknown codes have no grace)."""
        return entry[1] is None or entry[0] + self._ttl < time.monotonic()

    def put(self, key: str, target: CodeTarget | None, generation: int) -> None:
        if generation != self.generation or self._max == 0:
            return
        if target is None and self._negative_ttl == 0:
            return
        self._drop(key)
        ttl = self._ttl * random.uniform(0.8, 1.0) if target is not None else self._negative_ttl
        self._entries[key] = (time.monotonic() + ttl, target)
        if target is not None:
            self._by_program.setdefault(target.program_id, set()).add(key)
            self._by_advocate.setdefault(target.advocate_id, set()).add(key)
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None or entry[1] is None:
            return
        target = entry[1]
        for index, owner in (
            (self._by_program, target.program_id),
            (self._by_advocate, target.advocate_id),
        ):
            keys = index.get(owner)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[owner]

    def invalidate_program(self, program_id: str) -> None:
        self.generation += 1
        for key in list(self._by_program.get(program_id, ())):
            self._drop(key)

    def invalidate_advocate(self, advocate_id: str) -> None:
        self.generation += 1
        for key in list(self._by_advocate.get(advocate_id, ())):
            self._drop(key)

    def invalidate_codes(self, codes: list[str]) -> None:
        self.generation += 1
        for code in codes:
            self._drop(domain.code_key(code))

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._by_program.clear()
        self._by_advocate.clear()


class LinkState:
    """What the redirect shares with the workers and the API of one app instance."""

    def __init__(self, settings: Any) -> None:
        from link_service.config import Settings

        assert isinstance(settings, Settings)
        self.settings = settings
        self.cache = CodeCache(
            settings.code_cache_size,
            settings.code_cache_ttl_seconds,
            settings.code_cache_negative_ttl_seconds,
        )
        self.ip_key = settings.ip_hash_key.encode()
        self.client_ip_header = (
            settings.client_ip_header.lower().encode() if settings.client_ip_header else None
        )
        self.rt: Runtime | None = None
        self.writer: ClickWriter | None = None
        self.invalidator: CacheInvalidator | None = None
        self.enrollment: EnrollmentWorker | None = None
        self.registry: Any = None  # the app's Prometheus registry (servicekit.metrics)
        # One database lookup per code at a time: concurrent misses for a code share it.
        self._loading: dict[str, asyncio.Task[CodeTarget | None]] = {}

    async def lookup(self, key: str) -> CodeTarget | None:
        hit, target = self.cache.get(key)
        if hit:
            return target
        stale = self.cache.stale(key)
        if stale is not None:
            # Past its TTL but no event changed it: answer now and refresh once behind it, so
            # an expiry never puts Postgres (and the pool the click writers share) in front of
            # a redirect.
            self._load(key)
            return stale
        return await asyncio.shield(self._load(key))

    def _load(self, key: str) -> asyncio.Task[CodeTarget | None]:
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        return task

    def _loaded(self, key: str, task: asyncio.Task[CodeTarget | None]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled() and task.exception() is not None:
            # Whoever awaited it got the error; a background refresh leaves the stale entry
            # answering and the next request retries.
            log.warning("code lookup failed", exc_info=task.exception())

    async def _fetch(self, key: str) -> CodeTarget | None:
        assert self.rt is not None
        generation = self.cache.generation
        async with self.rt.pool.acquire() as conn:
            row = await repository.resolve_code(conn, key)
        target = CodeTarget.from_row(row) if row is not None else None
        self.cache.put(key, target, generation)
        return target


async def _not_found(send: Send, head: bool) -> None:
    await send_response(
        send,
        404,
        [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")],
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


async def answer(state: LinkState, scope: Scope, send: Send) -> int:
    """Answer a GET or HEAD under /r/: the redirect, or the not-found page. Returns the status."""
    head = scope["method"] == "HEAD"
    parts = scope["path"][3:].split("/")
    if len(parts) > 2:
        await _not_found(send, head)
        return 404
    code = unquote(parts[0])
    channel = parts[1] if len(parts) == 2 and parts[1] in domain.SHARE_CHANNELS else None
    if not domain.is_well_formed_code(code):
        await _not_found(send, head)
        return 404
    target = await state.lookup(domain.code_key(code))
    if target is None:
        await _not_found(send, head)
        return 404

    raw_query = scope["query_string"]
    query = parse_qsl(raw_query.decode("latin-1")) if raw_query else []
    utm = [(k, v) for k, v in query if k.startswith("utm_")]
    if channel is not None and not utm:
        utm = [("utm_source", channel), ("utm_medium", "referral")]
    now = datetime.now(UTC)
    live = domain.program_is_live(target.program_status, target.starts_at, target.ends_at, now)
    deep_link = next((v for k, v in query if k == "to"), None) if live else None

    click_id: str | None = None
    if not head:
        click_id = await _record(state, scope, target, channel, live, now)
    if deep_link or utm or click_id is None:
        if live:
            dest = domain.redirect_target(target.landing_url, target.allowed_domains, deep_link)
        else:
            # A paused or ended program still sends people somewhere sensible.
            dest = target.fallback_url or target.landing_url
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
    client = _client_info(scope, headers, state.client_ip_header)
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


def _client_info(scope: Scope, headers: Headers, ip_header: bytes | None) -> str | None:
    if ip_header is not None:
        forwarded = headers.get(ip_header)
        if forwarded:
            return forwarded.decode("latin-1").split(",")[0].strip() or None
    client = scope.get("client")
    return str(client[0]) if client else None

"""Request body limits, applied before anything reads or parses a body: the outermost layer of
every service app (app.ServiceApp), in front of the front doors too.

Each request has one limit: the route's own where a route declares one (`BodyLimits.route`,
e.g. link-service's bulk enrollment upload), else the service's `MAX_BODY_BYTES`. A declared
`Content-Length` over it is answered 413 at once, nothing read and no handler run; a body
without a length (chunked) is counted as it is read and refused as soon as it passes the limit,
the rest never read. The 413 is the problem+json document of type `body-too-large`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.problems import body_too_large


class BodyTooLarge(HTTPException):
    """Raised by `receive` past the limit. A Starlette HTTPException, so FastAPI's body reading
    lets it through to the app's exception handler (servicekit.problems: 413 problem+json)
    instead of turning it into a 400; outside FastAPI (a front door) this layer answers it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds {limit} bytes")
        self.limit = limit


@dataclass
class BodyLimits:
    default: int
    # (method, path regex, limit) of routes with a limit of their own
    routes: list[tuple[str, re.Pattern[str], int]] = field(default_factory=list)

    def route(self, method: str, template: str, limit: int) -> None:
        """`method template` takes bodies up to `limit` bytes instead of the default."""
        regex, _, _ = compile_path(template)
        self.routes.append((method.upper(), regex, limit))

    def limit_for(self, method: str, path: str) -> int:
        for m, regex, limit in self.routes:
            if m == method and regex.match(path):
                return limit
        return self.default


async def limit_body(
    limits: BodyLimits,
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    length: bytes | None,
    streamed: bool,
) -> None:
    """Run `app` with the request's body bounded by its limit (`length`: its Content-Length
    header, `streamed`: it has a Transfer-Encoding)."""
    if length is None and not streamed:
        # No body (HTTP/1.1 has none without either header).
        await app(scope, receive, send)
        return
    limit = limits.limit_for(scope["method"], scope["path"])
    if length is not None and not streamed:
        try:
            declared = int(length)
        except ValueError:
            declared = -1  # the server refuses a malformed length before we see it
        if declared > limit:
            await body_too_large(limit, scope["path"])(scope, receive, send)
            return
        # The server delivers no more than the declared length.
        await app(scope, receive, send)
        return

    size = 0
    started = False

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise BodyTooLarge(limit)
        return message

    async def tracked(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        await app(scope, counted, tracked)
    except BodyTooLarge:
        if started:
            raise
        await body_too_large(limit, scope["path"])(scope, receive, send)

"""Raw ASGI plumbing, shared by the front doors (servicekit.front) and the FastAPI dependencies
that read the same things: a request's headers, its body (bounded, and replayed to the app the
request is passed on to), and whole responses sent in one go, problem+json ones exactly as the
app's exception handlers write them (servicekit.problems)."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from servicekit.problems import DomainError, domain_problem, internal_error, unavailable

Headers = dict[bytes, bytes]

JSON = b"application/json"


def header_map(scope: Scope) -> Headers:
    """The request's headers by name (ASGI servers give them lower-case). A repeated header
    keeps its first value, as Starlette's `request.headers.get` does: the dict is built from
    the reversed list, so the first occurrence is the one stored last."""
    return dict(reversed(scope["headers"]))


async def read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The body, and whether more of it is left unread (it outgrew `limit`)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False
        if size > limit:
            return b"".join(chunks), True


def replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """`receive` for the app a read request is passed on to: the body read so far first, then
    the rest as it comes."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replayed


async def send_response(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


_JSON_HEADERS = [(b"content-type", JSON)]


async def send_json(send: Send, status: int, body: bytes) -> None:
    """A JSON document already serialised (as FastAPI sends a response model)."""
    await send_response(send, status, _JSON_HEADERS, body)


async def send_problem(scope: Scope, send: Send, exc: DomainError) -> None:
    """A refusal, as the app's exception handler for DomainError answers it."""
    await domain_problem(exc, scope["path"])(scope, _no_body, send)


async def send_internal_error(scope: Scope, send: Send) -> None:
    """An unexpected error's 500, as the app's last-resort exception handler answers it (the
    caller logs the error)."""
    await internal_error(scope["path"])(scope, _no_body, send)


async def send_unavailable(scope: Scope, send: Send) -> None:
    """The database away: a 503, as the app's exception handler for it answers (the caller
    logs the error)."""
    await unavailable(scope["path"])(scope, _no_body, send)


async def _no_body() -> Message:
    # Starlette's responses take a `receive`; these never read the request.
    return {"type": "http.disconnect"}

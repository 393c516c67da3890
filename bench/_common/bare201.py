"""The reference for bench/conversions.py (issue #24): a bare ASGI app on uvicorn that reads the
request body and answers 201 with a JSON body the size of attribution-service's answer to
POST /v1/conversions. No framework, no I/O: the CPU of the HTTP path alone, per request."""

from __future__ import annotations

from typing import Any

BODY = (
    b'{"id":"cnv_abcdefghijklmnopqrstuvwx","status":"attributed","order_id":"run-123456",'
    b'"advocate_id":"adv_abcdefghijklmnopqrstuvwx","referral_id":"ref_abcdefghijklmnopqrstuvwx",'
    b'"amount":"59.90","currency":"USD","created_at":"2026-01-01T00:00:00.000000Z"}'
)
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 201, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})

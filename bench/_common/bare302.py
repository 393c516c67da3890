"""The Python limit for bench/redirect.py: a bare ASGI app on uvicorn that only answers 302
(with a Location of the same size as link-service's). No framework, no I/O."""

from __future__ import annotations

from typing import Any

LOCATION = (
    b"https://shop.example.com/join?src=ref&ref=ABCDEFGH&click_id=clk_abcdefghijklmnopqrstuvwx"
)
HEADERS = [
    (b"location", LOCATION),
    (b"cache-control", b"no-store"),
    (b"content-length", b"0"),
]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 302, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b""})

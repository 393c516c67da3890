"""The Python limit for bench/advocate.py: a bare ASGI app on uvicorn that answers every GET with
a fixed JSON body the size of a typical GET /v1/me. No framework, no I/O, no token check."""

from __future__ import annotations

import json
from typing import Any

BODY = json.dumps(
    {
        "advocate_id": "adv_" + "x" * 24,
        "share": [{"channel": f"c{i}", "url": "u" * 80, "message": "m" * 120} for i in range(7)],
        "referrals": [{"friend": "b•••@e•••.com", "status": "rewarded"} for _ in range(20)],
    }
).encode()
HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"content-length", str(len(BODY)).encode()),
]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})

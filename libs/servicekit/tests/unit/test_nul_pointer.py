"""Where a NUL sits in a request (Postgres text refuses it; servicekit.problems answers 422)."""

from __future__ import annotations

import json

from starlette.requests import Request

from servicekit.problems import nul_pointer


def _request(
    body: object, path_params: dict[str, str] | None = None, query: bytes = b""
) -> Request:
    raw = json.dumps(body).encode()

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": raw, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/x",
        "headers": [],
        "query_string": query,
        "path_params": path_params or {},
    }
    return Request(scope, receive)


async def test_the_pointer_names_the_first_string_holding_a_nul() -> None:
    assert await nul_pointer(_request({"a": "ok", "b": [{"c": "x\x00"}]})) == "/b/0/c"
    assert await nul_pointer(_request({"a/b": "\x00"})) == "/a~1b"
    assert await nul_pointer(_request({"k\x00": 1})) == "/k\x00"
    assert await nul_pointer(_request({}, path_params={"code": "A\x00"})) == "/code"
    assert await nul_pointer(_request({}, query=b"q=%00")) == "/q"
    assert await nul_pointer(_request({"a": "fine"})) == ""

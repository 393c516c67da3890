"""The single POST of an attempt, through httpx's MockTransport: no socket is opened."""

from __future__ import annotations

import asyncio

import httpx

from notification_service.webhooks.dispatcher import post
from notification_service.webhooks.domain import AttemptResult


async def send(
    handler: httpx.MockTransport, total_seconds: float = 2.0, limit: int = 16
) -> AttemptResult:
    return await post(
        handler,
        "https://hooks.example.com/in",
        b'{"type":"x"}',
        {"webhook-id": "evt_1"},
        total_seconds=total_seconds,
        body_limit=limit,
    )


async def test_status_body_and_retry_after_are_captured() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(429, headers={"Retry-After": "30"}, text="slow down " * 10)

    result = await send(httpx.MockTransport(handler))
    assert result.status_code == 429 and result.retry_after == "30" and not result.ok
    assert result.response_body == "slow down slow d"  # cut at the limit
    assert result.error is None and result.latency_ms >= 0
    assert seen[0].content == b'{"type":"x"}' and seen[0].headers["webhook-id"] == "evt_1"


async def test_redirects_are_not_followed() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/"})

    result = await send(httpx.MockTransport(handler))
    assert result.status_code == 302 and calls == 1


async def test_connection_errors_are_described() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = await send(httpx.MockTransport(handler))
    assert result.status_code is None and result.error == "ConnectError: connection refused"


async def test_the_whole_attempt_is_bounded() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    result = await send(httpx.MockTransport(handler), total_seconds=0.05)
    assert result.status_code is None and result.error == "timed out after 0.05s"
    assert result.latency_ms < 2000


async def test_empty_answers_log_no_body() -> None:
    result = await send(httpx.MockTransport(lambda r: httpx.Response(204)))
    assert result.ok and result.response_body is None

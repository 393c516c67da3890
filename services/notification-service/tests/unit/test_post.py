"""The single POST of an attempt, through httpx's MockTransport: no socket is opened."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc

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


async def test_a_gzip_bomb_is_capped_on_the_decoded_bytes() -> None:
    # The review: the cap applied after httpx inflated each raw chunk whole, so a small gzip
    # body could make the dispatcher allocate hundreds of megabytes. A real socket here: a
    # MockTransport reads (and inflates) the answer itself.
    bomb = gzip.compress(b"\0" * (100 * 1024 * 1024), compresslevel=1)

    async def receiver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n"
        writer.write(head.encode() + b"Connection: close\r\n\r\n" + bomb)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(receiver, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tracemalloc.start()
    try:
        async with httpx.AsyncHTTPTransport() as transport:
            result = await post(
                transport,
                f"http://127.0.0.1:{port}/in",
                b"{}",
                {},
                total_seconds=10,
                body_limit=1024,
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        server.close()
    assert result.status_code == 500 and result.response_body == "\0" * 1024, result
    assert peak < 16 * 1024 * 1024


async def test_a_gzip_answer_is_logged_decoded() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = gzip.compress(b"accepted, thanks " * 4)
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=body)

    result = await send(httpx.MockTransport(handler), limit=20)
    assert result.ok and result.response_body == "accepted, thanks acc"

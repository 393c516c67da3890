"""The SSRF guard at connect time (GuardedTransport), with the guard on.

No test here can open a connection to anything: names resolve through a fake resolver, and the
network layer under the guard is a fake that fails the test on any connection attempt it was
not scripted to accept (only one public documentation address is, and it answers from memory).
So even a broken guard cannot make these tests reach a private or metadata address."""

from __future__ import annotations

from collections.abc import Iterable

import httpcore
import httpx
import pytest

from notification_service.webhooks.dispatcher import post
from notification_service.webhooks.urlguard import GuardedTransport

PUBLIC = "93.184.215.14"


class NoNetwork(httpcore.AsyncNetworkBackend):
    """Records every connect. Any address but the scripted public one fails the test; the
    public one gets a canned HTTP answer from memory (no socket)."""

    def __init__(self, answer: bytes | None = None) -> None:
        self.connects: list[tuple[str, int]] = []
        self._answer = answer

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if host != PUBLIC or self._answer is None:
            pytest.fail(f"a connection to {host}:{port} was attempted")
        return httpcore.AsyncMockStream([self._answer])

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        pytest.fail("a unix socket connection was attempted")

    async def sleep(self, seconds: float) -> None:
        return None


DNS: dict[str, list[str]] = {
    "hooks.example.com": [PUBLIC],
    "intranet.example.com": ["10.0.0.7"],
    "mixed.example.com": [PUBLIC, "192.168.1.20"],
    "metadata.example.com": ["169.254.169.254"],
    "v6-loopback.example.com": ["::1"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
}


async def resolve(host: str, port: int) -> list[str]:
    return DNS[host]


async def attempt(url: str, backend: NoNetwork, *, follow: bool = False) -> httpx.Response:
    transport = GuardedTransport(resolve, backend=backend)
    async with httpx.AsyncClient(transport=transport, follow_redirects=follow) as client:
        return await client.post(url, content=b"{}")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://127.0.0.1/in", "loopback"),
        ("https://10.0.0.1/in", "private"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://[::1]/in", "loopback"),
        ("https://intranet.example.com/in", "private"),
        ("https://mixed.example.com/in", "private"),
        ("https://metadata.example.com/in", "metadata"),
        ("https://v6-loopback.example.com/in", "loopback"),
        ("https://mapped.example.com/in", "loopback"),
        ("http://127.0.0.1:8080/in", "loopback"),
        ("https://[::ffff:a9fe:a9fe]/", "metadata"),
    ],
)
async def test_non_public_destinations_are_refused_at_connect(url: str, words: str) -> None:
    backend = NoNetwork()
    with pytest.raises(httpx.ConnectError) as err:
        await attempt(url, backend)
    assert "refused to connect" in str(err.value) and words in str(err.value)
    assert backend.connects == []


async def test_a_public_name_connects_to_the_checked_address_with_its_own_host() -> None:
    backend = NoNetwork(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    transport = GuardedTransport(resolve, backend=backend)
    async with httpx.AsyncClient(transport=transport) as client:
        r = await client.post("https://hooks.example.com/in", content=b"{}")
    assert r.status_code == 204
    # the socket goes to the address that was checked; the Host header (and SNI, which the
    # TLS layer takes from the URL) stay the name's
    assert backend.connects == [(PUBLIC, 443)]
    assert r.request.headers["host"] == "hooks.example.com"


async def test_a_name_rebound_to_a_private_address_is_refused_at_connect() -> None:
    """Public when the endpoint was vetted, private when the webhook is sent."""
    answers = iter([[PUBLIC], ["10.1.2.3"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    assert await rebinding("hooks.example.com", 443) == [PUBLIC]  # what vetting saw
    backend = NoNetwork()
    transport = GuardedTransport(rebinding, backend=backend)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError, match="private"):
            await client.post("https://hooks.example.com/in", content=b"{}")
    assert backend.connects == []


async def test_a_redirect_to_a_private_address_is_refused() -> None:
    redirect = (
        b"HTTP/1.1 307 Temporary Redirect\r\n"
        b"Location: https://10.0.0.1/internal\r\nContent-Length: 0\r\n\r\n"
    )
    # Even a client that follows redirects cannot reach the private address: the redirected
    # connection goes through the same check.
    backend = NoNetwork(redirect)
    with pytest.raises(httpx.ConnectError, match="private"):
        await attempt("https://hooks.example.com/in", backend, follow=True)
    assert backend.connects == [(PUBLIC, 443)]

    # The dispatcher's own POST does not follow at all: the 307 is a failed attempt.
    backend = NoNetwork(redirect)
    transport = GuardedTransport(resolve, backend=backend)
    async with transport:
        result = await post(
            transport,
            "https://hooks.example.com/in",
            b"{}",
            {},
            total_seconds=5,
            body_limit=100,
        )
    assert result.status_code == 307 and not result.ok
    assert backend.connects == [(PUBLIC, 443)]


async def test_the_dispatcher_reports_a_refusal_as_a_failed_attempt() -> None:
    backend = NoNetwork()
    transport = GuardedTransport(resolve, backend=backend)
    async with transport:
        result = await post(
            transport, "https://169.254.169.254/", b"{}", {}, total_seconds=5, body_limit=100
        )
    assert result.status_code is None and result.error is not None
    assert "metadata" in result.error and backend.connects == []

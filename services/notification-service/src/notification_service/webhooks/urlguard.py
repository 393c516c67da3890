"""The SSRF guard on webhook destinations: a merchant names a URL and this service POSTs to it
from inside the platform's network, so the URL could otherwise reach loopback, the private
network or a cloud metadata service.

Names are resolved through an injected `Resolver`, so tests never touch DNS, and the rules on
addresses are the pure `domain.refusal_reason`. The guard runs twice:
- `vet_url` when an endpoint is set up or changed, so a bad URL is a 422 naming `url`;
- `GuardedTransport` on every connection the dispatcher opens. A name can change its answer
  after it was vetted (DNS rebinding: public at set-up, 169.254.169.254 at delivery), so the
  transport resolves the name once, checks every address, and connects to the checked address
  itself; TLS still uses the URL's host for SNI and certificate checks and the Host header is
  the URL's. Nothing re-resolves between the check and the connect. Redirects are not
  followed, and if they were, their connections would pass through the same check.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpcore
import httpx

from notification_service.webhooks import domain
from servicekit.problems import InvalidInput

# (host, port) -> the addresses a connection to it could go to.
Resolver = Callable[[str, int], Awaitable[list[str]]]

RESOLVE_TIMEOUT_SECONDS = 5.0


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class UrlPolicy:
    allow_http: bool
    allow_private_networks: bool
    resolve: Resolver = system_resolver


async def vet_url(url: str, policy: UrlPolicy) -> str:
    """The URL to store, or InvalidInput naming `url`. With private networks allowed nothing
    is resolved: there is nothing left to refuse, and a receiver that is not up yet is fine."""
    parsed = domain.parse_webhook_url(url, allow_http=policy.allow_http)
    if policy.allow_private_networks:
        return parsed.url
    if parsed.literal is not None:
        addresses = [str(parsed.literal)]
    else:
        try:
            addresses = await asyncio.wait_for(
                policy.resolve(parsed.host, parsed.port), RESOLVE_TIMEOUT_SECONDS
            )
        except (OSError, TimeoutError):
            addresses = []
        if not addresses:
            raise InvalidInput(f"url host '{parsed.host}' does not resolve", field="/url")
    for address in addresses:
        reason = domain.refusal_reason(address)
        if reason is not None:
            shown = parsed.host if parsed.literal is not None else f"{parsed.host} ({address})"
            raise InvalidInput(
                f"url must point to a public address; {shown} is {reason}", field="/url"
            )
    return parsed.url


class RefusedDestination(httpcore.ConnectError):
    """A connection the guard refused; httpx reports it as a ConnectError (a failed attempt)."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer with the SSRF check in front of every TCP connect."""

    def __init__(self, resolve: Resolver, inner: httpcore.AsyncNetworkBackend | None = None):
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._addresses(host, port, timeout)
        for address in addresses:
            reason = domain.refusal_reason(address)
            if reason is not None:
                raise RefusedDestination(
                    f"refused to connect to {host} ({address}): {reason}"
                    if address != host
                    else f"refused to connect to {host}: {reason}"
                )
        last: Exception | None = None
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
                return _PolledStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def _addresses(self, host: str, port: int, limit: float | None) -> list[str]:
        literal = domain.ip_literal(host)
        if literal is not None:
            return [str(literal)]
        try:
            addresses = await asyncio.wait_for(
                self._resolve(host, port), limit or RESOLVE_TIMEOUT_SECONDS
            )
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc!r}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} does not resolve")
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedDestination("unix sockets are not webhook destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PolledStream(httpcore.AsyncNetworkStream):
    """A connection whose "is it still usable?" check polls the socket directly.

    httpcore asks every pooled connection `is_readable` before each request; through the AnyIO
    stream that builds anyio's whole attribute table per call, which profiled at about a tenth
    of a delivery's CPU. The socket does not change over the connection's life (TLS wraps it
    in memory), so it is looked up once. Streams without a socket (test doubles) answer for
    themselves."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        return _PolledStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> object:
        if info == "is_readable" and self._socket is not None:
            fd = self._socket.fileno()
            if fd == -1:
                return True  # closed: as httpcore itself reads it, not reusable
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        return self._inner.get_extra_info(info)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose every connect goes through
    `GuardedBackend`. httpx takes no network backend as an argument, so the pool it builds is
    replaced by one built with the same settings and the guarded backend; request and error
    mapping stay httpx's own."""

    def __init__(
        self,
        resolve: Resolver = system_resolver,
        *,
        backend: httpcore.AsyncNetworkBackend | None = None,
        limits: httpx.Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        limits = limits or httpx.Limits()
        ssl_context = ssl_context or httpx.create_ssl_context()
        super().__init__(limits=limits, verify=ssl_context)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(resolve, backend),
        )

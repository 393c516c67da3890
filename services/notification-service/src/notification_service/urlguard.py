"""The SSRF guard on webhook destinations: a merchant names a URL and this service POSTs to it
from inside the platform's network, so the URL could otherwise reach loopback, the private
network or a cloud metadata service.

Names are resolved through an injected `Resolver`, so tests never touch DNS, and the rules on
addresses are the pure `domain.refusal_reason`. This module checks when an endpoint is set up;
a name can still change its answer later (DNS rebinding), which is why the same
`refusal_reason` is meant to run again on the address actually connected to, inside the
delivery client's transport (the dispatcher takes that transport as a parameter).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from notification_service import domain
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
            raise InvalidInput(f"url host '{parsed.host}' does not resolve", field="url")
    for address in addresses:
        reason = domain.refusal_reason(address)
        if reason is not None:
            shown = parsed.host if parsed.literal is not None else f"{parsed.host} ({address})"
            raise InvalidInput(
                f"url must point to a public address; {shown} is {reason}", field="url"
            )
    return parsed.url

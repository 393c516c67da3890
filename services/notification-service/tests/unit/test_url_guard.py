"""The SSRF guard, with names resolved through a fake resolver. Every test here runs with
sockets and the system resolver disabled, so a broken guard fails the test instead of
reaching out to an address."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from notification_service.webhooks import domain
from notification_service.webhooks.urlguard import UrlPolicy, vet_url
from servicekit.problems import InvalidInput

DNS = {
    "hooks.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "internal.example.com": ["10.1.2.3"],
    "split.example.com": ["93.184.215.14", "192.168.1.10"],
    "localhost": ["127.0.0.1", "::1"],
    "metadata.example.com": ["169.254.169.254"],
    "v6-private.example.com": ["fd12:3456::1"],
    "127.1": ["127.0.0.1"],
}


async def fake_resolve(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return DNS[host]


async def must_not_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolved {host} although nothing needed resolving")


GUARDED = UrlPolicy(allow_http=False, allow_private_networks=False, resolve=fake_resolve)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


async def refused(url: str, policy: UrlPolicy = GUARDED) -> str:
    with pytest.raises(InvalidInput) as err:
        await vet_url(url, policy)
    assert err.value.field == "/url"
    return err.value.detail


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://127.9.9.9:8443/hook", "loopback"),
        ("https://10.0.0.1/hook", "private"),
        ("https://172.16.5.4/hook", "private"),
        ("https://192.168.0.1/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://169.254.10.1/hook", "link-local"),
        ("https://[::1]/hook", "loopback"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[fd00:ec2::254]/hook", "metadata"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://[::ffff:10.0.0.1]/hook", "private"),
        ("https://[64:ff9b::a00:1]/hook", "private"),
        ("https://[2002:7f00:1::]/hook", "loopback"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://100.100.100.200/hook", "metadata"),
        ("https://100.64.0.1/hook", "not a public"),
        ("https://224.0.0.1/hook", "multicast"),
    ],
)
async def test_address_literals_are_refused(url: str, reason: str) -> None:
    assert reason in await refused(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://internal.example.com/hook", "private"),
        ("https://localhost/hook", "loopback"),
        ("https://metadata.example.com/hook", "metadata"),
        ("https://v6-private.example.com/hook", "private"),
        # one bad answer is enough: the connection could go to either
        ("https://split.example.com/hook", "private"),
        # short forms some resolvers accept are names, judged by what they resolve to
        ("https://127.1/hook", "loopback"),
    ],
)
async def test_names_resolving_to_refused_addresses_are_refused(url: str, reason: str) -> None:
    detail = await refused(url)
    assert reason in detail and "(" in detail  # names the address it resolved to


async def test_public_https_is_accepted() -> None:
    assert await vet_url("https://hooks.example.com/in", GUARDED) == "https://hooks.example.com/in"
    assert (
        await vet_url("https://93.184.215.14:8443/in", GUARDED) == "https://93.184.215.14:8443/in"
    )


async def test_unresolvable_names_are_refused() -> None:
    assert "does not resolve" in await refused("https://nowhere.example.com/hook")


async def test_http_needs_the_setting() -> None:
    assert "https" in await refused("http://hooks.example.com/hook")
    allowed = UrlPolicy(allow_http=True, allow_private_networks=False, resolve=fake_resolve)
    assert await vet_url("http://hooks.example.com/h", allowed) == "http://hooks.example.com/h"
    assert "private" in await refused("http://10.0.0.1/hook", allowed)


async def test_private_networks_setting_allows_loopback_without_resolving() -> None:
    local = UrlPolicy(allow_http=True, allow_private_networks=True, resolve=must_not_resolve)
    assert await vet_url("http://127.0.0.1:9000/h", local) == "http://127.0.0.1:9000/h"
    assert await vet_url("http://localhost:9000/h", local) == "http://localhost:9000/h"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/x",
        "hooks.example.com/x",
        "https:///nohost",
        "https://user:pw@hooks.example.com/x",
        "https://hooks.example.com:99999/x",
        "javascript:alert(1)",
    ],
)
async def test_malformed_urls_are_refused(url: str) -> None:
    await refused(url)


def test_public_addresses_pass() -> None:
    for address in ("93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"):
        assert domain.refusal_reason(address) is None
    assert domain.refusal_reason("not-an-ip") == "not an IP address"

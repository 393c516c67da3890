"""Pure rules of webhook delivery: which endpoints want an event, what is sent, which
destinations are refused, what happens after each attempt, and the events attempts publish. No
I/O and no clock of its own (time and randomness come in as arguments), so every rule is
unit-tested without infrastructure and the retry spacing is checked without sleeping."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from referral_events.contracts import attribution, link, reward
from referral_events.contracts import notification as out
from referral_events.envelope import EventPayload
from servicekit.problems import InvalidInput


def _types_of(module: Any) -> set[str]:
    return {
        m.TYPE
        for m in vars(module).values()
        if isinstance(m, type) and issubclass(m, EventPayload) and hasattr(m, "TYPE")
    }


# Event types an endpoint can subscribe to: everything attribution- and reward-service publish
# and link-service's program, advocate and code events. Clicks are left out: they are
# analytics volume (one per redirect, bots included), not business events a merchant's system
# acts on; so are workspace and API-key events: they are the platform's access control (key
# hashes, scopes), read by the services' key copies, not business events; and advocate
# sightings (hashed networks and devices, an input of attribution's screening). Taken from the
# contracts, so a type a producer adds is deliverable without a change here.
_NOT_DELIVERED = frozenset(
    {
        link.LinkClicked.TYPE,
        link.AdvocateSighted.TYPE,
        link.WorkspaceCreated.TYPE,
        link.ApiKeyCreated.TYPE,
        link.ApiKeyUpdated.TYPE,
        link.ApiKeyRevoked.TYPE,
        link.ApiKeysUsed.TYPE,
    }
)
DELIVERED_EVENT_TYPES: frozenset[str] = frozenset(
    _types_of(attribution)
    | _types_of(reward)
    | (_types_of(link) - _NOT_DELIVERED)
    # made here, from conversion.attributed (email.consumed.on_conversion)
    | {out.ThankYou.TYPE}
)

# The type of the message the "send test event" endpoint sends. Not a consumed event: it is
# delivered only to the endpoint it was asked for, whatever that endpoint's filter.
TEST_EVENT_TYPE = "webhook.test.v1"

SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
SECRET_BYTES = 24

# A filter entry is an exact type name or a prefix ending in ".*" ("reward.*"); "*" is all.
_FILTER_PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?)$")


def new_secret() -> str:
    """`whsec_` + base64 of random bytes: the format Standard Webhooks libraries accept."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


# --- event-type filters -------------------------------------------------------------------

# What an endpoint created without `event_types` receives: the reward lifecycle (pending,
# available, capped, voided, clawed back, redeemed), what most integrations act on. Every
# type ("*") is opt-in: an endpoint that took everything by default got every topic's events,
# and that traffic made the deliveries it wanted 7x slower (issue 17).
DEFAULT_EVENT_TYPES: tuple[str, ...] = ("reward.*",)


def endpoint_filter(event_types: Sequence[str] | None, field: str = "/event_types") -> list[str]:
    """The filter an endpoint is saved with: the default when none is given; an empty one is
    refused (it used to mean "everything", which now must be asked for as "*")."""
    if event_types is None:
        return list(DEFAULT_EVENT_TYPES)
    if not event_types:
        raise InvalidInput(
            "name the event types to deliver (exact names or patterns such as 'reward.*'), "
            "'*' for every type, or leave event_types out for the default "
            f"{list(DEFAULT_EVENT_TYPES)}",
            field=field,
        )
    return normalize_event_types(event_types)


def matches(event_types: Sequence[str], event_type: str) -> bool:
    """An empty filter (endpoints saved before filters were required; migration 0011 writes
    them out as "*") takes every delivered type."""
    if not event_types:
        return True
    for entry in event_types:
        if entry == "*" or entry == event_type:
            return True
        if entry.endswith(".*") and event_type.startswith(entry[:-1]):
            return True
    return False


def normalize_event_types(
    event_types: Iterable[str], known: frozenset[str] = DELIVERED_EVENT_TYPES
) -> list[str]:
    """Refuses entries that can never match, so a typo surfaces at set-up rather than as
    webhooks that silently never arrive."""
    result: list[str] = []
    for raw in event_types:
        entry = raw.strip()
        if not _FILTER_PATTERN.fullmatch(entry):
            raise InvalidInput(f"'{raw}' is not an event type or pattern", field="/event_types")
        if not any(matches([entry], t) for t in known):
            raise InvalidInput(
                f"no delivered event type matches '{entry}'; known: {', '.join(sorted(known))}",
                field="/event_types",
            )
        if entry not in result:
            result.append(entry)
    return result


# --- what is sent -------------------------------------------------------------------------


def render_body(event_type: str, event_time: datetime, data: dict[str, Any], tenant_id: str) -> str:
    """The Standard Webhooks payload shape. Rendered once per message and stored, so every
    attempt to every endpoint signs and sends the very same bytes."""
    if event_time.tzinfo is None:  # CloudEvents times are UTC when they name no offset
        event_time = event_time.replace(tzinfo=UTC)
    body = {
        "type": event_type,
        "timestamp": event_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": {**data, "tenant_id": tenant_id},
    }
    return json.dumps(body, separators=(",", ":"))


def render_test_body(endpoint_id: str, at: datetime, tenant_id: str) -> str:
    return render_body(
        TEST_EVENT_TYPE,
        at,
        {"endpoint_id": endpoint_id, "message": "This is a test event."},
        tenant_id,
    )


def truncate(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit]


# --- destination guard (SSRF) ---------------------------------------------------------------

# Cloud metadata services. Most sit in ranges refused anyway (link-local, ULA); listing them
# names the reason, and catches the one that is not (Alibaba's, in the shared 100.64/10 range).
METADATA_ADDRESSES: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "168.63.129.16",  # Azure wire server
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)


@dataclass(frozen=True)
class WebhookUrl:
    url: str
    host: str
    port: int
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None


def parse_webhook_url(url: str, *, allow_http: bool) -> WebhookUrl:
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"url is not a valid URL: {exc}", field="/url") from None
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed:
        raise InvalidInput(
            "url must be an absolute https URL"
            if not allow_http
            else "url must be an absolute http(s) URL",
            field="/url",
        )
    if not parts.hostname:
        raise InvalidInput("url has no host", field="/url")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(
            "url must not carry credentials; receivers authenticate webhooks by signature",
            field="/url",
        )
    host = parts.hostname.rstrip(".").lower()
    return WebhookUrl(
        url=url,
        host=host,
        port=port or (443 if parts.scheme == "https" else 80),
        literal=ip_literal(host),
    )


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address if `host` is one. Only the canonical dotted form counts: the short and
    numeric forms some resolvers accept ("127.1", "2130706433") are refused by
    `refusal_reason` after resolution like any other name."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def refusal_reason(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not be sent to `address`, or None when it is a public unicast one."""
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address in IPv6 clothing reaches the IPv4 host: judge that one.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in ipaddress.ip_network("64:ff9b::/96"):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return refusal_reason(embedded)
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "not a public address"
    return None


# --- an attempt -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A delivery claimed for one attempt, with everything the request needs."""

    delivery_id: str
    tenant_id: str
    endpoint_id: str
    message_id: str
    attempt: int
    url: str
    event_type: str
    body: str | None  # None: cleared by retention
    secrets: tuple[str, ...]
    round_start: int = 0
    failing_since: datetime | None = None

    @property
    def attempt_in_round(self) -> int:
        return self.attempt - self.round_start

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Claim:
        return cls(
            delivery_id=row["id"],
            tenant_id=row["tenant_id"],
            endpoint_id=row["endpoint_id"],
            message_id=row["message_id"],
            attempt=row["attempts"],
            url=row["url"],
            event_type=row["event_type"],
            body=row["body"],
            secrets=tuple(row["secrets"]),
            round_start=row["round_start"],
            failing_since=row["failing_since"],
        )


@dataclass(frozen=True)
class AttemptResult:
    """What one POST came back with: a status (any, 2xx or not) or a transport error."""

    status_code: int | None
    latency_ms: int
    response_body: str | None = None
    error: str | None = None
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        if self.error:
            return self.error
        return f"HTTP {self.status_code}"


Outcome = Literal["delivered", "retry", "failed"]
DeliveryStatus = Literal["pending", "delivered", "failed"]


def delivery_status(outcome: Outcome) -> DeliveryStatus:
    """A delivery's status after an attempt: pending again while it is retried."""
    return "pending" if outcome == "retry" else outcome


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    next_attempt_at: datetime | None = None
    disable_endpoint: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """schedule[i] is the wait after failed attempt i+1; len(schedule) + 1 attempts in all."""

    schedule: tuple[timedelta, ...]
    jitter: float = 0.1

    @classmethod
    def from_seconds(cls, seconds: Iterable[float], jitter: float = 0.1) -> RetryPolicy:
        return cls(tuple(timedelta(seconds=s) for s in seconds), jitter)

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    @property
    def longest_wait(self) -> timedelta:
        return max(self.schedule)


DEFAULT_POLICY = RetryPolicy.from_seconds([5, 300, 1800, 7200, 18000, 36000, 36000])


def retry_delay(attempt: int, policy: RetryPolicy, rand: Callable[[], float]) -> timedelta | None:
    """Wait after failed attempt `attempt` (1-based), jittered by ±policy.jitter; None once
    the attempts are used up. `rand` returns a float in [0, 1)."""
    if attempt < 1 or attempt > len(policy.schedule):
        return None
    base = policy.schedule[attempt - 1]
    return base * (1 + policy.jitter * (2 * rand() - 1))


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """RFC 9110 Retry-After: delay-seconds or an HTTP-date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta(0))


def decide(
    result: AttemptResult,
    attempt: int,
    now: datetime,
    policy: RetryPolicy = DEFAULT_POLICY,
    rand: Callable[[], float] = lambda: 0.5,
) -> Decision:
    """What follows attempt number `attempt` (1-based, counted within the delivery's current
    round: a resend or replay starts a new round with the whole schedule).

    2xx delivers. 410 Gone means the receiver retired the URL: the delivery fails and the
    endpoint is disabled, so nothing else is sent there. Everything else (timeouts, connection
    errors, 5xx, other 4xx, redirects, which are never followed) is retried on the schedule.
    A 429's Retry-After is honoured by never retrying sooner than it asks, though never later
    than the schedule's longest wait either, so a receiver cannot park deliveries forever.
    """
    if result.ok:
        return Decision("delivered")
    if result.status_code == 410:
        return Decision("failed", disable_endpoint=True, reason="endpoint answered 410 Gone")
    delay = retry_delay(attempt, policy, rand)
    if delay is None:
        return Decision("failed", reason=f"gave up after {attempt} attempts")
    if result.status_code == 429:
        asked = parse_retry_after(result.retry_after, now)
        if asked is not None:
            delay = max(delay, min(asked, policy.longest_wait))
    return Decision("retry", next_attempt_at=now + delay)


def failing_too_long(
    failing_since: datetime | None, now: datetime, disable_after: timedelta
) -> bool:
    """An endpoint whose every attempt failed since `failing_since` is switched off once that
    has lasted `disable_after` (5 days by default): its retries would keep piling up, and the
    merchant learns of it from endpoint.disabled rather than from silence."""
    return failing_since is not None and now - failing_since >= disable_after


def rotation_expiry(now: datetime, overlap: timedelta) -> datetime:
    """Until when the secret being replaced keeps signing next to the new one."""
    return now + overlap


@dataclass(frozen=True)
class ReplayWindow:
    """Deliveries that failed at `since` or later, and before `until` when there is one."""

    since: datetime
    until: datetime | None


def replay_window(since: datetime, until: datetime | None) -> ReplayWindow:
    if until is not None and until <= since:
        raise InvalidInput("until must be later than since", field="/until")
    return ReplayWindow(since, until)


# --- the events attempts publish ------------------------------------------------------------


def delivery_event(
    claim: Claim, decision: Decision, result: AttemptResult
) -> out.DeliverySucceeded | out.DeliveryFailed | None:
    """delivery.succeeded or delivery.failed once an attempt settles its delivery; None while
    it is retried."""
    common = {
        "delivery_id": claim.delivery_id,
        "endpoint_id": claim.endpoint_id,
        "message_id": claim.message_id,
        "event_type": claim.event_type,
        "attempt": claim.attempt,
    }
    if decision.outcome == "delivered":
        assert result.status_code is not None
        return out.DeliverySucceeded(**common, status_code=result.status_code)
    if decision.outcome == "failed":
        return out.DeliveryFailed(
            **common,
            status_code=result.status_code,
            error=f"{decision.reason}; last attempt: {result.describe()}",
            will_retry=False,
        )
    return None


def endpoint_disabled_event(
    endpoint: Mapping[str, Any], reason: str, result: AttemptResult, at: datetime
) -> out.EndpointDisabled:
    """`endpoint` is the row as disabled, `result` the attempt that disabled it."""
    return out.EndpointDisabled(
        endpoint_id=endpoint["id"],
        reason=reason,
        url=endpoint["url"],
        failing_since=endpoint["failing_since"],
        last_status_code=result.status_code,
        disabled_at=at,
    )

"""The facts a conversion is decided on, as typed values: the conversion itself, its evidence
context (what accepting and choosing its evidence read) and its screening facts (what the
database held about its candidate advocate), each made from the record the repository read (one
conversion at a time, or set-wise for a group commit). conversions.decision decides on them. No
I/O here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from attribution_service.conversions import fraud
from attribution_service.conversions.domain import Candidate, Click, Code, Referral
from attribution_service.programs.domain import ProgramSettings, settings_by_program
from servicekit import audience


def _dt(value: Any) -> datetime:
    # timestamps inside jsonb documents are ISO strings
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _opt_dt(value: Any) -> datetime | None:
    return None if value is None else _dt(value)


def click_of(k: Mapping[str, Any]) -> Click:
    """The click of a row of the clicks copy (or its jsonb document)."""
    return Click(
        k["id"],
        k["program_id"],
        k["advocate_id"],
        _dt(k["clicked_at"]),
        is_bot=k["is_bot"],
        counts=k["counts"],
        ip_hash=k.get("ip_hash"),
        device_class=k.get("device_class"),
        inactive_reason=k.get("inactive_reason"),
    )


@dataclass(frozen=True, slots=True)
class Conversion:
    """A conversion's own columns: the request checked and shaped (amounts in minor units, IP
    address and device id hashed), new or as stored."""

    id: str
    tenant_id: str
    type: str
    # the type's name when it is one a program names (not a built-in type)
    custom_type: str | None
    customer_id: str
    email: str | None
    email_norm: str | None
    order_id: str | None
    amount_minor: int | None
    currency: str | None
    occurred_at: datetime
    click_id: str | None
    code_key: str | None
    idempotency_key: str | None
    request_hash: str
    subscription_id: str | None
    ip_hash: str | None
    device_hash: str | None
    existing_customer: bool
    locale: str | None
    source: str
    # the friend's country (ISO 3166-1 alpha-2), where the merchant sends it: eligibility
    country: str | None = None
    # Hashed on arrival like ip_hash: the IP's /24 or /48, the user agent on that network, the
    # shipping address, the payment fingerprint (the ring rule's signals).
    ip_prefix_hash: str | None = None
    ua_network_hash: str | None = None
    address_hash: str | None = None
    payment_hash: str | None = None
    # the email's local part without digits at its domain, and a domain no free-mail or
    # disposable provider's (fraud.email_stem, fraud.rare_domain), hashed
    email_stem_hash: str | None = None
    email_domain_hash: str | None = None
    # When the platform took it in (None: stored before this was kept).
    received_at: datetime | None = None
    # The IP address and device id under IP_HASH_PREVIOUS_KEY during a rotation of the hash key
    # (servicekit.keyedhash), compared and never stored: None otherwise, and when read back.
    ip_hash_previous: str | None = None
    device_hash_previous: str | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Conversion:
        """The conversion of a stored row."""
        return cls(**{n: row[n] for n in CONVERSION_COLUMNS})

    @property
    def effective_at(self) -> datetime:
        """When it happened as far as the platform can tell: the reported time, but never
        later than its arrival (windows and the too-fast check use this)."""
        if self.received_at is None:
            return self.occurred_at
        return min(self.occurred_at, self.received_at)

    def ring_signals(self) -> dict[str, str]:
        return fraud.ring_signals({c: getattr(self, c) for c in fraud.SIGNAL_COLUMNS.values()})


_COMPARED_ONLY = ("ip_hash_previous", "device_hash_previous")
CONVERSION_COLUMNS = tuple(f.name for f in fields(Conversion) if f.name not in _COMPARED_ONLY)


def _country_rule(doc: Any) -> audience.CountryRule | None:
    if isinstance(doc, str):  # jsonb inside jsonb on a connection without the codec
        doc = json.loads(doc)
    if not doc:
        return None
    rule = audience.CountryRule(
        tuple(doc.get("countries_allow", ())), tuple(doc.get("countries_deny", ()))
    )
    return None if rule.empty else rule


@dataclass(frozen=True, slots=True)
class Evidence:
    """A conversion's evidence context: who owns the click and code it names (None: not seen
    yet), which of them were awaited before and never arrived, the code, the customer's known
    clicks (when it names a click), their referrals, and the tenant's program settings."""

    code_tenant: str | None
    click_tenant: str | None
    # "code:<tenant>" / "click:<tenant>": the named code / click expired for that tenant
    expired: frozenset[str]
    code: Code | None
    clicks: tuple[Click, ...]
    referrals: tuple[Referral, ...]
    settings: Mapping[str, ProgramSettings]

    @classmethod
    def of(cls, rec: Mapping[str, Any]) -> Evidence:
        """The evidence context of a record of the repository's evidence columns."""
        c = rec["code"]
        return cls(
            code_tenant=rec["code_tenant"],
            click_tenant=rec["click_tenant"],
            expired=frozenset(rec["expired"] or ()),
            code=Code(c["code"], c["program_id"], c["advocate_id"]) if c else None,
            clicks=tuple(click_of(k) for k in rec["clicks"]),
            referrals=tuple(
                Referral(
                    r["id"], r["program_id"], r["advocate_id"], _dt(r["created_at"]), r["prior"]
                )
                for r in rec["referrals"]
            ),
            # JSON text: the same few documents for every conversion, parsed once
            settings=settings_by_program(rec["settings"]),
        )

    def unseen(self, conv: Conversion) -> bool:
        """Whether a piece of evidence the conversion names has not been seen yet."""
        return bool(
            (conv.code_key and self.code_tenant is None)
            or (conv.click_id and self.click_tenant is None)
        )


@dataclass(frozen=True, slots=True)
class ScreeningAsk:
    """What to read to screen a conversion against its candidate: the conversion's keys and
    the advocate's sightings within `network_window` of `anchor` (the click, or the
    conversion without one)."""

    program_id: str
    advocate_id: str
    tenant_id: str
    customer_id: str
    id: str
    occurred_at: datetime
    anchor: datetime
    network_window: timedelta
    ip_hash: str | None
    device_hash: str | None

    @classmethod
    def of(
        cls,
        conv: Conversion,
        program_id: str,
        advocate_id: str,
        *,
        anchor: datetime,
        network_window: timedelta,
    ) -> ScreeningAsk:
        return cls(
            program_id=program_id,
            advocate_id=advocate_id,
            tenant_id=conv.tenant_id,
            customer_id=conv.customer_id,
            id=conv.id,
            occurred_at=conv.occurred_at,
            anchor=anchor,
            network_window=network_window,
            ip_hash=conv.ip_hash,
            device_hash=conv.device_hash,
        )


@dataclass(frozen=True, slots=True)
class RingAsk:
    """What to read for the ring rule: the workspace's referred conversions that arrived
    within `window` before this one and share one of its signals (the rule keeps, for all but
    the strong identifiers, those of its candidate advocate)."""

    tenant_id: str
    id: str
    low: datetime
    high: datetime
    signals: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, conv: Conversion, window: timedelta) -> RingAsk:
        high = conv.received_at or conv.occurred_at
        return cls(conv.tenant_id, conv.id, high - window, high, tuple(conv.ring_signals().items()))


def neighbour_of(rec: Mapping[str, Any]) -> fraud.Neighbour:
    """A neighbour of a record (or jsonb document) of the repository's ring columns."""
    return fraud.Neighbour(
        rec["id"],
        rec["customer_id"],
        rec["advocate_id"],
        _dt(rec["received_at"]),
        fraud.ring_signals(rec),
    )


@dataclass(frozen=True, slots=True)
class RingRead:
    """The workspace's referred conversions that arrived in (low, high] sharing one of a
    conversion's signals, as read for the ring rule: over its RingAsk's window, or read ahead
    with its context over the window of the named code's program."""

    low: datetime
    high: datetime
    found: tuple[fraud.Neighbour, ...]

    @classmethod
    def of(cls, rec: Mapping[str, Any]) -> RingRead:
        """The read of a record of the repository's ring columns (a neighbour sharing two
        signals comes once per signal: kept once)."""
        found = {n.id: n for n in map(neighbour_of, rec["ring"])}
        return cls(rec["ring_low"], rec["ring_high"], tuple(found.values()))

    def answers(self, ask: RingAsk) -> bool:
        """Whether this read covers `ask`: the same conversion's arrival, a window as long."""
        return self.high == ask.high and self.low <= ask.low

    def neighbours(self, ask: RingAsk) -> tuple[fraud.Neighbour, ...]:
        """Those within `ask`'s window sharing one of its signals (not the conversion itself)."""
        signals = set(ask.signals)
        return tuple(
            n
            for n in self.found
            if n.id != ask.id
            and ask.low < n.seen_at <= ask.high
            and not signals.isdisjoint(n.signals.items())
        )


@dataclass(frozen=True, slots=True)
class Screening:
    """What the database held for screening a conversion against the candidate it was `asked`
    for (sightings within its network window of its anchor). None where the program's or
    advocate's copy has not arrived yet."""

    asked: ScreeningAsk
    program_status: str | None
    program_starts_at: datetime | None
    program_ends_at: datetime | None
    advocate_customer_id: str | None
    advocate_email: str | None
    advocate_blocked: bool | None
    sightings: tuple[fraud.Sighting, ...]
    # the customer's earliest decided conversion that is not the advocate's
    converted_before: datetime | None
    # earlier conversions, not counting this one
    advocate_hour: int
    advocate_day: int
    ip_signups: int
    device_signups: int
    # the program's rule on friends' countries (None: the program sets none)
    friend_countries: audience.CountryRule | None = None
    # the advocate's referrals denied so far (auto-block)
    advocate_denied: int = 0
    # earlier referrals that may share a signal with this one (the ring rule; see RingAsk)
    neighbours: tuple[fraud.Neighbour, ...] = ()

    @classmethod
    def of(cls, rec: Mapping[str, Any], asked: ScreeningAsk) -> Screening:
        """The screening facts of a record of the repository's screening columns."""
        p, a = rec["program"], rec["advocate"]
        return cls(
            asked=asked,
            program_status=p["status"] if p else None,
            program_starts_at=_opt_dt(p["starts_at"]) if p else None,
            program_ends_at=_opt_dt(p["ends_at"]) if p else None,
            advocate_customer_id=a["customer_id"] if a else None,
            advocate_email=a["email"] if a else None,
            advocate_blocked=a["blocked"] if a else None,
            sightings=tuple(
                fraud.Sighting(_dt(s["seen_at"]), s["ip_hash"], s["device_hash"])
                for s in rec["sightings"]
            ),
            converted_before=rec["converted_before"],
            advocate_hour=rec["adv_hour"],
            advocate_day=rec["adv_day"],
            ip_signups=rec["ip_signups"],
            device_signups=rec["device_signups"],
            friend_countries=_country_rule(p.get("friend_countries") if p else None),
            advocate_denied=rec["advocate_denied"],
        )

    def answers(self, ask: ScreeningAsk) -> bool:
        """Whether these are the facts `ask` reads: read for the same candidate and anchor
        (those read ahead for the named code's advocate are anchored at the conversion), the
        sightings over a window at least as long."""
        a = self.asked
        return (
            a.advocate_id == ask.advocate_id
            and a.program_id == ask.program_id
            and a.id == ask.id
            and a.anchor == ask.anchor
            and a.network_window >= ask.network_window
        )

    def facts(self, conv: Conversion, cand: Candidate) -> fraud.Facts:
        """The facts fraud screening applies the program's policy to."""
        click = cand.click
        return fraud.Facts(
            conversion_type=conv.type,
            occurred_at=conv.occurred_at,
            customer_id=conv.customer_id,
            email=conv.email,
            ip_hash=conv.ip_hash,
            device_hash=conv.device_hash,
            ip_hash_previous=conv.ip_hash_previous,
            device_hash_previous=conv.device_hash_previous,
            click=fraud.ClickFacts(
                click.clicked_at, click.is_bot, click.ip_hash, click.inactive_reason
            )
            if click
            else None,
            advocate_customer_id=self.advocate_customer_id,
            advocate_email=self.advocate_email,
            advocate_blocked=self.advocate_blocked,
            advocate_denied=self.advocate_denied,
            advocate_sightings=self.sightings,
            marked_existing=conv.existing_customer,
            converted_before=self.converted_before,
            program_status=self.program_status,
            program_starts_at=self.program_starts_at,
            program_ends_at=self.program_ends_at,
            advocate_conversions_hour=self.advocate_hour,
            advocate_conversions_day=self.advocate_day,
            signups_same_ip_day=self.ip_signups,
            signups_same_device_day=self.device_signups,
            id=conv.id,
            advocate_id=cand.advocate_id,
            received_at=conv.received_at,
            signals=conv.ring_signals(),
            neighbours=self.neighbours,
        )

"""The facts a conversion is decided on, as typed values: the conversion itself, its evidence
context (what accepting and choosing its evidence read) and its screening facts (what the
database held about its candidate advocate). The repository reads them, one conversion at a time
or set-wise for a group commit; conversions.decision decides on them. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from attribution_service.conversions import fraud
from attribution_service.conversions.domain import Candidate, Click, Code, Referral
from attribution_service.programs.domain import ProgramSettings


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

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Conversion:
        """The conversion of a stored row."""
        return cls(**{n: row[n] for n in CONVERSION_COLUMNS})


CONVERSION_COLUMNS = tuple(f.name for f in fields(Conversion))


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


@dataclass(frozen=True, slots=True)
class Screening:
    """What the database held for screening a conversion against the candidate (program_id,
    advocate_id) it was read for, its sightings read within `network_window` of `anchor`. None
    where the program's or advocate's copy has not arrived yet."""

    program_id: str
    advocate_id: str
    anchor: datetime
    network_window: timedelta
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

    def answers(self, ask: ScreeningAsk) -> bool:
        """Whether these are the facts `ask` reads (read ahead for the named code's advocate,
        anchored at the conversion; sightings over a window at least as long)."""
        return (
            self.advocate_id == ask.advocate_id
            and self.program_id == ask.program_id
            and self.anchor == ask.anchor
            and self.network_window >= ask.network_window
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
            click=fraud.ClickFacts(
                click.clicked_at, click.is_bot, click.ip_hash, click.inactive_reason
            )
            if click
            else None,
            advocate_customer_id=self.advocate_customer_id,
            advocate_email=self.advocate_email,
            advocate_blocked=self.advocate_blocked,
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
        )

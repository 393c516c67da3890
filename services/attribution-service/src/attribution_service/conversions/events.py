"""The events of a conversion's decision, each type built by one function here whichever path
decided it (the single path, the group commit, a review)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from attribution_service.conversions import domain
from attribution_service.events import EVENTS
from referral_events import EventPayload
from referral_events.contracts import attribution as out
from referral_events.outbox import OutboxRow


def conversion_type(type_: str, custom_type: str | None) -> str:
    """The type events carry: a custom type is "custom" (its name in `custom_type`)."""
    return "custom" if custom_type else type_


def rejected_event(
    row: Mapping[str, Any], cand: domain.Candidate, reasons: list[str]
) -> tuple[EventPayload, str]:
    return (
        out.ConversionRejected(
            conversion_id=row["id"],
            program_id=cand.program_id,
            advocate_id=cand.advocate_id,
            conversion_type=conversion_type(row["type"], row["custom_type"]),
            custom_type=row["custom_type"],
            friend_customer_id=row["customer_id"],
            order_id=row["order_id"],
            reasons=reasons,
            occurred_at=row["occurred_at"],
        ),
        f"{row['id']}:rejected",
    )


def flagged_event(
    row: Mapping[str, Any], cand: domain.Candidate, review_id: str, reasons: list[str]
) -> tuple[EventPayload, str]:
    return (
        out.ConversionFlagged(
            conversion_id=row["id"],
            review_id=review_id,
            program_id=cand.program_id,
            advocate_id=cand.advocate_id,
            friend_customer_id=row["customer_id"],
            conversion_type=conversion_type(row["type"], row["custom_type"]),
            custom_type=row["custom_type"],
            reasons=reasons,
            occurred_at=row["occurred_at"],
        ),
        f"{row['id']}:flagged",
    )


def outbox_entry(
    tenant_id: str, cand: domain.Candidate, payload: EventPayload, event_id: str
) -> OutboxRow:
    """The outbox row of a conversion's event: keyed by the advocate, as every event of
    attribution.events."""
    return EVENTS.row(payload, tenant_id=tenant_id, key=cand.advocate_id, event_id=event_id)


def attributed_events(
    row: Mapping[str, Any],
    cand: domain.Candidate,
    *,
    referral_created: bool,
    referral_click_id: str | None,
    review_id: str | None = None,
) -> list[tuple[EventPayload, str]]:
    """referral.attributed (the friend's first attribution in the program) and
    conversion.attributed, with their event ids."""
    events: list[tuple[EventPayload, str]] = []
    if referral_created:
        events.append(
            (
                out.ReferralAttributed(
                    referral_id=row["referral_id"],
                    program_id=cand.program_id,
                    advocate_id=cand.advocate_id,
                    friend_customer_id=row["customer_id"],
                    conversion_id=row["id"],
                    evidence=cand.evidence,
                    click_id=referral_click_id,
                    attributed_at=datetime.now(UTC),
                    friend_email=row["email"],
                    friend_locale=row["locale"],
                ),
                f"{row['referral_id']}:attributed",
            )
        )
    events.append(
        (
            out.ConversionAttributed(
                conversion_id=row["id"],
                referral_id=row["referral_id"],
                program_id=cand.program_id,
                advocate_id=cand.advocate_id,
                friend_customer_id=row["customer_id"],
                conversion_type=conversion_type(row["type"], row["custom_type"]),
                custom_type=row["custom_type"],
                order_id=row["order_id"],
                subscription_id=row["subscription_id"],
                amount_minor=row["amount_minor"],
                currency=row["currency"],
                is_first_purchase=row["is_first_purchase"],
                sequence=row["sequence"],
                occurred_at=row["occurred_at"],
                evidence=cand.evidence,
                review_id=review_id,
            ),
            f"{row['id']}:attributed",
        )
    )
    return events

"""The events of a conversion's decision, each type built by one function here whichever path
decided it (the single path, the group commit, a reviewer): keyed by the candidate advocate, as
every event of attribution.events, with an event id derived from what it is about (a decision
published twice is one event)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from attribution_service.conversions.domain import Candidate
from attribution_service.conversions.facts import Conversion
from attribution_service.events import EVENTS
from referral_events.contracts import attribution as out
from referral_events.outbox import OutboxRow


def conversion_type(type_: str, custom_type: str | None) -> str:
    """The type events carry: a custom type is "custom" (its name in `custom_type`)."""
    return "custom" if custom_type else type_


def referral_attributed(
    conv: Conversion, cand: Candidate, referral_id: str, click_id: str | None
) -> OutboxRow:
    """The friend's first attribution in the program (their referral was created)."""
    payload = out.ReferralAttributed(
        referral_id=referral_id,
        program_id=cand.program_id,
        advocate_id=cand.advocate_id,
        friend_customer_id=conv.customer_id,
        conversion_id=conv.id,
        evidence=cand.evidence,
        click_id=click_id,
        attributed_at=datetime.now(UTC),
        friend_email=conv.email,
        friend_locale=conv.locale,
    )
    return EVENTS.row(
        payload,
        tenant_id=conv.tenant_id,
        key=cand.advocate_id,
        event_id=f"{referral_id}:attributed",
    )


def conversion_attributed(
    conv: Conversion,
    cand: Candidate,
    *,
    referral_id: str,
    sequence: int,
    is_first_purchase: bool,
    review_id: str | None,
) -> OutboxRow:
    payload = out.ConversionAttributed(
        conversion_id=conv.id,
        referral_id=referral_id,
        program_id=cand.program_id,
        advocate_id=cand.advocate_id,
        friend_customer_id=conv.customer_id,
        conversion_type=conversion_type(conv.type, conv.custom_type),
        custom_type=conv.custom_type,
        order_id=conv.order_id,
        subscription_id=conv.subscription_id,
        amount_minor=conv.amount_minor,
        currency=conv.currency,
        is_first_purchase=is_first_purchase,
        sequence=sequence,
        occurred_at=conv.occurred_at,
        evidence=cand.evidence,
        review_id=review_id,
    )
    return EVENTS.row(
        payload, tenant_id=conv.tenant_id, key=cand.advocate_id, event_id=f"{conv.id}:attributed"
    )


def conversion_rejected(
    conv: Conversion, cand: Candidate, reasons: list[str], review_id: str | None
) -> OutboxRow:
    """Denied by screening, or by a reviewer (`review_id`)."""
    payload = out.ConversionRejected(
        conversion_id=conv.id,
        program_id=cand.program_id,
        advocate_id=cand.advocate_id,
        conversion_type=conversion_type(conv.type, conv.custom_type),
        custom_type=conv.custom_type,
        friend_customer_id=conv.customer_id,
        order_id=conv.order_id,
        reasons=reasons,
        occurred_at=conv.occurred_at,
        review_id=review_id,
    )
    return EVENTS.row(
        payload, tenant_id=conv.tenant_id, key=cand.advocate_id, event_id=f"{conv.id}:rejected"
    )


def conversion_flagged(
    conv: Conversion, cand: Candidate, reasons: list[str], review_id: str
) -> OutboxRow:
    payload = out.ConversionFlagged(
        conversion_id=conv.id,
        review_id=review_id,
        program_id=cand.program_id,
        advocate_id=cand.advocate_id,
        friend_customer_id=conv.customer_id,
        conversion_type=conversion_type(conv.type, conv.custom_type),
        custom_type=conv.custom_type,
        reasons=reasons,
        occurred_at=conv.occurred_at,
    )
    return EVENTS.row(
        payload, tenant_id=conv.tenant_id, key=cand.advocate_id, event_id=f"{conv.id}:flagged"
    )


def conversion_refunded(conv: Mapping[str, Any], refund: Mapping[str, Any]) -> OutboxRow:
    """A refund of an attributed conversion (`conv` and `refund` as stored): published when it
    is recorded, or when the conversion it was recorded against while waiting (review, pending
    evidence) is attributed later. One event id per refund, whichever of the two publishes it."""
    payload = out.ConversionRefunded(
        conversion_id=conv["id"],
        refund_id=refund["id"],
        program_id=conv["program_id"],
        advocate_id=conv["advocate_id"],
        friend_customer_id=conv["customer_id"],
        conversion_type=conversion_type(conv["type"], conv["custom_type"]),
        order_id=conv["order_id"],
        amount_minor=refund["amount_minor"],
        currency=refund["currency"],
        refunded_total_minor=refund["total_minor"],
        full=refund["full_refund"],
        refunded_at=refund["refunded_at"],
    )
    return EVENTS.row(
        payload,
        tenant_id=conv["tenant_id"],
        key=conv["advocate_id"],
        event_id=f"{refund['id']}:refunded",
    )


def advocate_auto_blocked(
    tenant_id: str,
    advocate_id: str,
    program_id: str,
    *,
    denied: int,
    after_denied: int,
    risk_score: int,
    blocked_at: datetime,
) -> OutboxRow:
    """The platform blocked the advocate (one event per crossing of the threshold)."""
    payload = out.AdvocateAutoBlocked(
        advocate_id=advocate_id,
        program_id=program_id,
        denied=denied,
        after_denied=after_denied,
        risk_score=risk_score,
        blocked_at=blocked_at,
    )
    return EVENTS.row(
        payload,
        tenant_id=tenant_id,
        key=advocate_id,
        event_id=f"{advocate_id}:auto_blocked:{denied}",
    )

"""The events payouts publish, one builder per type, each returning the outbox row keyed by the
holder with an id derived from the redemption or payout line."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from referral_events.contracts import reward as ev
from referral_events.envelope import EventPayload
from referral_events.outbox import OutboxRow
from reward_service.events import EVENTS, event_id
from reward_service.holders import HolderType, advocate_of, role_of
from reward_service.payouts.domain import PayoutLine, Redemption


def reward_redeemed(
    tenant_id: str, redemption: Redemption, holder_type: HolderType, at: datetime
) -> OutboxRow:
    payload = ev.RewardRedeemed(
        redemption_id=redemption.id,
        holder_id=redemption.holder_id,
        role=role_of(holder_type),
        amount=redemption.amount,
        unit=redemption.unit,
        advocate_id=advocate_of(holder_type, redemption.holder_id),
        reference=redemption.reference,
        redeemed_at=at,
    )
    return EVENTS.row(
        payload,
        tenant_id=tenant_id,
        key=redemption.holder_id,
        event_id=event_id("reward.redeemed", tenant_id, redemption.id),
    )


def _line_row(tenant_id: str, line: PayoutLine, payload: EventPayload) -> OutboxRow:
    return EVENTS.row(
        payload,
        tenant_id=tenant_id,
        key=line.holder_id,
        event_id=event_id(payload.TYPE, tenant_id, line.id),
    )


def _line_fields(batch_id: str, line: PayoutLine) -> dict[str, Any]:
    return dict(
        payout_id=line.id,
        batch_id=batch_id,
        advocate_id=advocate_of(line.holder_type, line.holder_id) or "",
        holder_id=line.holder_id,
        role=role_of(line.holder_type),
        amount=line.amount,
        unit=line.unit,
    )


def payout_created(tenant_id: str, batch_id: str, line: PayoutLine) -> OutboxRow:
    payload = ev.PayoutCreated.model_validate(_line_fields(batch_id, line))
    return _line_row(tenant_id, line, payload)


def payout_settled(tenant_id: str, batch_id: str, line: PayoutLine, at: datetime) -> OutboxRow:
    """payout.paid or payout.failed, as the line was marked."""
    fields = _line_fields(batch_id, line)
    if line.status == "paid":
        payload: ev.PayoutPaid | ev.PayoutFailed = ev.PayoutPaid.model_validate(
            {**fields, "reference": line.reference, "paid_at": at}
        )
    else:
        payload = ev.PayoutFailed.model_validate(
            {**fields, "reason": line.reason or "failed", "failed_at": at}
        )
    return _line_row(tenant_id, line, payload)

"""A refund as a pure rule: how much of a conversion's amount it gives back (the rest in full
when the merchant names no amount), refused beyond what is left or in another currency."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from attribution_service.refunds.schemas import RefundIn
from servicekit import money
from servicekit.ids import new_id
from servicekit.problems import InvalidInput


@dataclass(frozen=True, slots=True)
class NewRefund:
    id: str
    tenant_id: str
    conversion_id: str
    # the merchant's refund id, or "key:" + the Idempotency-Key
    external_id: str
    amount_minor: int
    currency: str
    # the conversion's refunded total with this refund
    total_minor: int
    full_refund: bool
    request_hash: str
    refunded_at: datetime


def new_refund(
    conv: Mapping[str, Any],
    cmd: RefundIn,
    *,
    external_id: str,
    request_hash: str,
    now: datetime,
) -> NewRefund:
    """The refund `cmd` asks of the stored conversion `conv`; raises InvalidInput when it has no
    amount, another currency is named, or more than is left is asked."""
    if conv["amount_minor"] is None or conv["currency"] is None:
        raise InvalidInput("this conversion has no amount to refund", field="/conversion_id")
    currency = conv["currency"]
    if cmd.currency and money.validate_currency(cmd.currency) != currency:
        raise InvalidInput(f"the conversion was paid in {currency}", field="/currency")
    remaining = conv["amount_minor"] - conv["refunded_minor"]
    if cmd.amount is not None:
        amount = money.to_minor(cmd.amount, currency)
    elif cmd.amount_minor is not None:
        amount = cmd.amount_minor
    else:
        amount = remaining
    if amount <= 0:
        raise InvalidInput("the conversion is already refunded in full", field="/amount")
    if amount > remaining:
        raise InvalidInput(
            f"only {money.format_minor(remaining, currency)} {currency} is left to refund",
            field="/amount",
        )
    total = conv["refunded_minor"] + amount
    return NewRefund(
        id=new_id("rfd"),
        tenant_id=conv["tenant_id"],
        conversion_id=conv["id"],
        external_id=external_id,
        amount_minor=amount,
        currency=currency,
        total_minor=total,
        full_refund=total == conv["amount_minor"],
        request_hash=request_hash,
        refunded_at=cmd.refunded_at or now,
    )

"""Bodies of the ledger routes (balances and statements)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from reward_service.units import UnitKind

_DISPLAY = "for people: digits grouped, with the unit ('20.00 EUR', '1,200 points', '16 GB')"


class BalanceOut(BaseModel):
    unit: str
    unit_kind: UnitKind
    purse: str
    available_minor: int
    pending_minor: int
    available: str
    pending: str
    available_display: str = Field(description=_DISPLAY)
    pending_display: str = Field(description=_DISPLAY)
    debt_minor: int = 0
    in_payout_minor: int = 0


class AccountBalanceOut(BaseModel):
    holder_id: str
    balances: list[BalanceOut]


class StatementLineOut(BaseModel):
    seq: int
    transfer_id: str
    leg: str
    account: str
    unit: str
    unit_kind: UnitKind
    purse: str
    amount_minor: int = Field(description="+ into the holder's account, - out of it")
    amount: str
    amount_display: str = Field(description=_DISPLAY)
    cause: str = Field(description="conversion, refund, redemption or payout line id")
    reward_id: str | None
    conversion_id: str | None
    created_at: datetime

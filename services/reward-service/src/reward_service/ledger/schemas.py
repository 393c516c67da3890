"""Bodies of the ledger routes (balances and statements)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class BalanceOut(BaseModel):
    unit: str
    purse: str
    available_minor: int
    pending_minor: int
    available: str
    pending: str
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
    purse: str
    amount_minor: int = Field(description="+ into the holder's account, - out of it")
    amount: str
    cause: str = Field(description="conversion, refund, redemption or payout line id")
    reward_id: str | None
    conversion_id: str | None
    created_at: datetime


class StatementOut(BaseModel):
    holder_id: str
    entries: list[StatementLineOut]
    next_cursor: str | None

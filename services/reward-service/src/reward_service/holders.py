"""Who holds rewards: the two sides of a referral and the account holders they become. The one
place a role maps to a holder type and back (earning posts to the holder, payouts tell the role)."""

from __future__ import annotations

from typing import Literal

Role = Literal["advocate", "friend"]
HolderType = Literal["program", "advocate", "customer"]


def holder_type_of(role: Role) -> HolderType:
    """The advocate holds as an advocate; the friend is the program's customer."""
    return "advocate" if role == "advocate" else "customer"


def role_of(holder_type: str) -> Role:
    return "advocate" if holder_type == "advocate" else "friend"


def advocate_of(holder_type: str, holder_id: str) -> str | None:
    """The advocate id an event about this holder names (None for a friend)."""
    return holder_id if holder_type == "advocate" else None

"""Bodies of the dev clock's routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

# Far beyond any hold (holds are days), small enough that no date overflows.
MAX_ADVANCE_SECONDS = 400 * 86400


class AdvanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    advance_seconds: float = Field(gt=0, le=MAX_ADVANCE_SECONDS)


class MoveOut(BaseModel):
    key_id: str
    tenant_id: str
    advance_seconds: float
    offset_seconds: float
    released: int
    moved_at: datetime


class ClockOut(BaseModel):
    now: datetime
    offset_seconds: float
    # Rewards the move released at once (their holds had ended by the new now).
    released: int | None = None
    moves: list[MoveOut]

"""HTTP bodies of bulk-enrollment jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class EnrollmentError(BaseModel):
    row: int = Field(description="1-based data row (the CSV header is not a row)")
    line: int = Field(description="line of the file")
    field: str | None
    message: str


class EnrollmentJobOut(BaseModel):
    id: str
    program_id: str
    format: Literal["csv", "ndjson"]
    status: Literal["queued", "running", "done"]
    total_rows: int
    done_rows: int
    enrolled: int
    existing: int = Field(description="rows whose customer was already enrolled (no change)")
    failed: int
    errors: list[EnrollmentError] = Field(description="the first errors; all at /errors")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

"""Bodies of the attribution settings routes (the settings themselves are programs.domain's
ProgramSettings)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from attribution_service.programs.domain import ProgramSettings


class SettingsOut(BaseModel):
    program_id: str
    settings: ProgramSettings
    updated_at: datetime | None

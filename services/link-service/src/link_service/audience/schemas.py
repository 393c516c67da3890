"""Bodies of a program's audience. The documents inside are checked by servicekit.audience (so
a bad one is named by its JSON pointer)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AudienceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attributes: dict[str, Any] = Field(
        default_factory=dict, description="custom attributes: name -> string/number/boolean/date"
    )
    segments: list[Any] = Field(default_factory=list, description="[{name, condition}]")
    eligibility: dict[str, Any] = Field(
        default_factory=dict,
        description="{enroll: {segment, countries_allow, countries_deny},"
        " friends: {countries_allow, countries_deny}}",
    )


class AudienceOut(BaseModel):
    program_id: str
    attributes: dict[str, str]
    builtin_attributes: dict[str, str]
    segments: list[dict[str, Any]]
    eligibility: dict[str, Any]
    version: int


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    condition: Any


class PreviewOut(BaseModel):
    matching: int = Field(description="advocates whose current attributes match")
    total: int = Field(description="advocates in the program")
    at: datetime

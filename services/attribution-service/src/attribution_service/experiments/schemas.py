"""Bodies of the experiment routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from servicekit.problems import InvalidInput


class VariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    weight: int = Field(description="a share of the advocates: weight / the weights' total")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="the variant's reward rule (kind reward_rule) or share message",
    )


class ExperimentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: Literal["reward_rule", "share_message"]
    variants: list[VariantIn] = Field(min_length=2, max_length=10)

    @model_validator(mode="after")
    def _unique_keys(self) -> ExperimentIn:
        if len({v.key for v in self.variants}) != len(self.variants):
            raise InvalidInput("variant keys must be unique", field="/variants")
        return self


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: str = Field(min_length=1, max_length=40)
    force: bool = Field(
        default=False,
        description="promote `variant` although the readout does not name it the winner",
    )


class VariantOut(BaseModel):
    key: str
    weight: int
    config: dict[str, Any]
    advocates: int = Field(description="the program's advocates assigned to this variant")
    referred: int = Field(description="of them, advocates who referred someone")
    referral_rate: float | None = Field(description="referred / advocates")
    funnel: dict[str, dict[str, int]] = Field(
        description="the variant's advocates' figures, all time: clicks, referrals, signups, "
        "first_purchases (unit ''), revenue per currency, and earned (their rewards less "
        "claw-backs) per unit: the variant's cost to its advocates"
    )


class ReadoutOut(BaseModel):
    variant: str = Field(description="compared with the first variant (the control)")
    enough_data: bool = Field(
        description="false below 100 advocates per variant or 5 successes or failures in any"
    )
    p_value: float | None = Field(
        description="chi-squared test of the 2x2 table (= two-sided two-proportion z-test)"
    )
    significant: bool = Field(description="p < 0.05")
    leader: str | None = Field(description="the variant with the higher rate, when significant")


class ExperimentOut(BaseModel):
    id: str
    program_id: str
    name: str
    kind: str
    status: str
    winner: str | None
    started_at: datetime | None
    ended_at: datetime | None
    variants: list[VariantOut]
    readout: list[ReadoutOut]
    known_winner: str | None = Field(
        description="the variant the readout says won: the one variant beating the control "
        "significantly, or the control when it beats every other; null while none is known"
    )


class AssignmentOut(BaseModel):
    experiment_id: str
    advocate_id: str
    variant: str = Field(
        description="the variant the advocate gets: their share of the split, or the winner "
        "once one is promoted (the split has stopped; every advocate, new ones too, gets it)"
    )
    split_variant: str = Field(
        description="the advocate's share of the split (what the readout counts them in)"
    )

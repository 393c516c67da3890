"""What a program sets for attribution (PUT through this service's API): the attribution model
and window, how long a referred customer stays attached, the custom conversion types it names,
and its fraud policy (each check on or off, with its action and thresholds). Pure values; the
rules that apply them are conversions.domain and conversions.fraud."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Action = Literal["review", "deny"]
Model = Literal["last_click", "first_click"]

BUILTIN_TYPES = frozenset({"signup", "purchase", "subscription_payment"})

# The longest self-referral network window a policy may set (30 days).
LONGEST_NETWORK_WINDOW_HOURS = 24 * 30


class CheckPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    action: Action = "deny"


class SelfReferralPolicy(CheckPolicy):
    # How close to the click (or the conversion, without a click) a sighting of the advocate's
    # IP hash or device must be to count as the same person.
    network_window_hours: int = Field(default=24, ge=1, le=LONGEST_NETWORK_WINDOW_HOURS)


class ExistingCustomerPolicy(CheckPolicy):
    pass


class VelocityPolicy(CheckPolicy):
    action: Action = "review"
    per_advocate_hour: int = Field(default=20, ge=1)
    per_advocate_day: int = Field(default=100, ge=1)
    signups_per_ip_day: int = Field(default=5, ge=1)
    signups_per_device_day: int = Field(default=5, ge=1)


class DisposableEmailPolicy(CheckPolicy):
    action: Action = "review"


class TooFastPolicy(CheckPolicy):
    action: Action = "review"
    min_seconds: int = Field(default=10, ge=1, le=86400)


class RingPolicy(CheckPolicy):
    """Clusters among one advocate's referrals (and, for a device, a shipping address or a
    payment fingerprint, among the workspace's): how many referred customers (this one
    included) may share a signal within `window_hours` of arrival before the conversion is
    flagged. The defaults let an office of five friends, a family on one home network and one
    shared device through."""

    action: Action = "review"
    window_hours: int = Field(default=24, ge=1, le=LONGEST_NETWORK_WINDOW_HOURS)
    # the IP's /24 (IPv4) or /48 (IPv6)
    network: int = Field(default=8, ge=2, le=10_000)
    user_agent_network: int = Field(default=6, ge=2, le=10_000)
    device: int = Field(default=3, ge=2, le=10_000)
    # the local part with its digits taken out, at one domain (ann1@, ann2@, ann3@)
    email_stem: int = Field(default=3, ge=2, le=10_000)
    # one domain that is no free-mail provider (a company's, or one bought for the ring)
    email_domain: int = Field(default=6, ge=2, le=10_000)
    shipping_address: int = Field(default=5, ge=2, le=10_000)
    payment: int = Field(default=4, ge=2, le=10_000)


class AutoBlockPolicy(BaseModel):
    """Block an advocate (link-service's block, announced by advocate.auto_blocked.v1) once this
    many of their referrals were denied, by screening or by a reviewer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    after_denied: int = Field(default=5, ge=1, le=10_000)


class FraudPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    self_referral: SelfReferralPolicy = SelfReferralPolicy()
    existing_customer: ExistingCustomerPolicy = ExistingCustomerPolicy()
    velocity: VelocityPolicy = VelocityPolicy()
    disposable_email: DisposableEmailPolicy = DisposableEmailPolicy()
    too_fast: TooFastPolicy = TooFastPolicy()
    bot_click: CheckPolicy = CheckPolicy()
    blocked_advocate: CheckPolicy = CheckPolicy()
    inactive_program: CheckPolicy = CheckPolicy()
    ring: RingPolicy = RingPolicy()
    auto_block: AutoBlockPolicy = AutoBlockPolicy()


class Attachment(BaseModel):
    """How long a referred customer stays attached to their advocate: `first_n` conversions of
    each type (first purchase only is n=1), all `within_months` of the referral, or `always`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["first_n", "within_months", "always"] = "within_months"
    n: int = Field(default=1, ge=1, le=1000)
    months: int = Field(default=12, ge=1, le=120)


def _custom_type(t: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_]{1,40}", t) or t in BUILTIN_TYPES:
        raise ValueError(f"custom type '{t}' must be a new lower_snake_case name")
    return t


DEFAULT_CLICK_RETENTION_DAYS = 90


class ProgramSettings(BaseModel):
    """Attribution settings and fraud policy of one program (PUT through this service's API)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Model = "last_click"
    window_days: int = Field(default=30, ge=1, le=365)
    # How long the program's raw clicks are kept before retention deletes them (their counts
    # stay in analytics). Unset: DEFAULT_CLICK_RETENTION_DAYS, or the window if that is longer.
    click_retention_days: int | None = Field(default=None, ge=1, le=3650)
    attachment: Attachment = Attachment()
    # Each item checked on its own, so a refusal points at it (`/custom_types/1`).
    custom_types: list[Annotated[str, AfterValidator(_custom_type)]] = Field(
        default_factory=list, max_length=50
    )
    fraud: FraudPolicy = FraudPolicy()

    @field_validator("click_retention_days")
    @classmethod
    def _keeps_the_window(cls, days: int | None, info: ValidationInfo) -> int | None:
        window = info.data.get("window_days")
        if days is not None and window is not None and days < window:
            raise ValueError(
                f"must be at least window_days ({window}): a click inside the attribution "
                "window is still evidence"
            )
        return days

    def click_retention(self) -> timedelta:
        """How long raw clicks of the program are kept: never less than its window."""
        days = self.click_retention_days or DEFAULT_CLICK_RETENTION_DAYS
        return timedelta(days=max(days, self.window_days))


DEFAULT_SETTINGS = ProgramSettings()


# A tenant's program settings parsed, by the JSON text Postgres gives (jsonb prints its keys
# in one order): every conversion reads them, and parsing and validating the same documents
# again for each one costs more than the rest of choosing.
_SETTINGS_CACHE: dict[str, dict[str, ProgramSettings]] = {}


def settings_by_program(text: str) -> dict[str, ProgramSettings]:
    """A tenant's settings by program id, from the JSON object of their documents."""
    parsed = _SETTINGS_CACHE.get(text)
    if parsed is None:
        if len(_SETTINGS_CACHE) > 1_000:
            _SETTINGS_CACHE.clear()
        parsed = _SETTINGS_CACHE[text] = {
            pid: ProgramSettings.model_validate(s) for pid, s in json.loads(text).items()
        }
    return parsed

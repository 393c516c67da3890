"""Events produced by attribution-service on `attribution.events` (keyed by advocate id).

Amounts are integers in the minor units of `currency` (ISO 4217), never floats.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from referral_events.envelope import EventPayload

Evidence = Literal["code", "click", "existing_referral"]


class ReferralAttributed(EventPayload):
    """A friend became attached to an advocate (first attributed conversion, usually signup).

    `friend_email`/`friend_locale` let notification-service contact the friend; they are personal
    data and absent when the merchant sent no email.
    """

    TYPE: ClassVar[str] = "referral.attributed.v1"
    PERSONAL_DATA: ClassVar[frozenset[str]] = frozenset({"friend_email"})

    referral_id: str
    program_id: str
    advocate_id: str
    friend_customer_id: str
    conversion_id: str
    evidence: Evidence
    click_id: str | None = None
    attributed_at: datetime
    friend_email: str | None = None
    friend_locale: str | None = None


class ConversionAttributed(EventPayload):
    """A conversion that earns: screening allowed it, or a reviewer approved it.

    `sequence` is this friend's n-th attributed conversion of this `conversion_type` (1 = first), so
    reward triggers such as "first N purchases" or "n-th subscription payment" need no state of
    their own. `custom_type` is set when the program names its own conversion type (then
    `conversion_type` is "custom").
    """

    TYPE: ClassVar[str] = "conversion.attributed.v1"

    conversion_id: str
    referral_id: str
    program_id: str
    advocate_id: str
    friend_customer_id: str
    conversion_type: str
    order_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    is_first_purchase: bool = False
    occurred_at: datetime
    evidence: Evidence
    decision: Literal["allow"] = "allow"
    sequence: int = 1
    custom_type: str | None = None
    subscription_id: str | None = None
    review_id: str | None = None


class ConversionRejected(EventPayload):
    """A referred conversion that will never earn: denied by screening or by a reviewer.

    Organic conversions (no evidence) are not rejected; they are recorded and emit nothing."""

    TYPE: ClassVar[str] = "conversion.rejected.v1"

    conversion_id: str
    program_id: str | None = None
    advocate_id: str | None = None
    conversion_type: str
    reasons: list[str]
    occurred_at: datetime
    decision: Literal["deny"] = "deny"
    friend_customer_id: str | None = None
    order_id: str | None = None
    custom_type: str | None = None
    review_id: str | None = None


class ConversionFlagged(EventPayload):
    """Screening said "review": the conversion waits in the review queue and earns nothing yet."""

    TYPE: ClassVar[str] = "conversion.flagged.v1"

    conversion_id: str
    review_id: str
    program_id: str
    advocate_id: str
    friend_customer_id: str
    conversion_type: str
    reasons: list[str]
    occurred_at: datetime
    custom_type: str | None = None


class ConversionRefunded(EventPayload):
    """One refund of an attributed conversion. `amount_minor` is THIS refund; `refunded_total_minor`
    is the cumulative refunded amount; `full` is true once the whole amount has been refunded."""

    TYPE: ClassVar[str] = "conversion.refunded.v1"

    conversion_id: str
    refund_id: str
    program_id: str
    advocate_id: str
    friend_customer_id: str
    conversion_type: str
    amount_minor: int
    currency: str
    refunded_total_minor: int
    full: bool
    refunded_at: datetime
    order_id: str | None = None


class SubscriptionCancelled(EventPayload):
    """A referred friend's subscription ended; recurring rewards for it stop."""

    TYPE: ClassVar[str] = "subscription.cancelled.v1"

    subscription_id: str
    program_id: str
    advocate_id: str
    friend_customer_id: str
    cancelled_at: datetime
    conversion_id: str | None = None


class ReviewDecided(EventPayload):
    """A reviewer approved or denied a flagged conversion. An approval is ALSO published as
    conversion.attributed (with `review_id`), a denial as conversion.rejected."""

    TYPE: ClassVar[str] = "review.decided.v1"

    review_id: str
    conversion_id: str
    program_id: str
    advocate_id: str
    decision: Literal["approve", "deny"]
    reason: str
    decided_at: datetime
    decided_by: str | None = None


class AdvocateAutoBlocked(EventPayload):
    """The platform blocked an advocate: `denied` of their referrals were denied (by screening
    or by a reviewer), at least the program's auto_block.after_denied. link-service blocks them
    (advocate.blocked.v1 follows); their conversions are denied from now on."""

    TYPE: ClassVar[str] = "advocate.auto_blocked.v1"

    advocate_id: str
    program_id: str
    denied: int
    after_denied: int
    risk_score: int
    blocked_at: datetime


# --- added for issue #22 (A/B experiments of programs; additive) -----------------------------


class _ExperimentState(EventPayload):
    """An experiment's whole state. `salt` and the variants' keys and weights are all a service
    needs to compute any advocate's variant itself (attribution_service.experiments.domain.assign:
    sha256 of salt and advocate id), so every service agrees without a lookup."""

    experiment_id: str
    program_id: str
    name: str
    kind: Literal["reward_rule", "share_message"]
    salt: str
    # [{"key", "weight", "config"}]: config is the variant's reward rule or share message
    variants: list[dict[str, object]]
    status: Literal["running", "paused", "ended"]
    winner: str | None = None
    changed_at: datetime


class ExperimentStarted(_ExperimentState):
    TYPE: ClassVar[str] = "experiment.started.v1"


class ExperimentPaused(_ExperimentState):
    TYPE: ClassVar[str] = "experiment.paused.v1"


class ExperimentEnded(_ExperimentState):
    """Ended; `winner` is the variant promoted (its config becomes the program's), if any."""

    TYPE: ClassVar[str] = "experiment.ended.v1"


class RewardRulePromoted(EventPayload):
    """A reward_rule experiment's winner was promoted: `rule` (the variant's config, a reward
    rule body as reward-service's `PUT /v1/programs/{id}/reward-rule` takes it) becomes the
    program's rule. reward-service, the owner of rules, writes it as a new version in force from
    when it consumes this (the same rule again adds no version). Key program id; one event per
    experiment (its id derives from the experiment's), so a re-emit is the same event."""

    TYPE: ClassVar[str] = "reward_rule.promoted.v1"

    experiment_id: str
    program_id: str
    variant: str
    rule: dict[str, object]
    forced: bool = False
    promoted_at: datetime

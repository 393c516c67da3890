"""Prometheus metrics the services export on /metrics.

Domain counters are defined here, once, so their names stay stable for the dashboard and the
alerts in deploy/ (a test checks that every name those reference is exported). Services only
increment them; labels are low-cardinality enums, never ids or personal data.
"""

from __future__ import annotations

from prometheus_client import Counter

FRAUD_DECISIONS = Counter(
    "referral_fraud_decisions_total",
    "Conversions screened by attribution-service, by decision (allow, review, deny).",
    ["decision"],
)

REWARDS_ISSUED = Counter(
    "referral_rewards_issued_total",
    "Rewards created by reward-service (pending or available), by role and kind.",
    ["role", "kind"],
)

REWARDS_CAPPED = Counter(
    "referral_rewards_capped_total",
    "Rewards recorded as capped instead of issued, by role and reason.",
    ["role", "reason"],
)

WEBHOOK_ATTEMPTS = Counter(
    "referral_webhook_attempts_total",
    "Webhook delivery attempts by notification-service, by outcome (succeeded, failed).",
    ["outcome"],
)

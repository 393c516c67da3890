"""reward-service's own counters (exported on /metrics beside servicekit's per-app ones; the
dashboard and the alerts in deploy/ read them by name)."""

from __future__ import annotations

from prometheus_client import Counter

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

"""attribution-service's own counters (exported on /metrics beside servicekit's per-app ones;
the dashboard and the alerts in deploy/ read them by name)."""

from __future__ import annotations

from prometheus_client import Counter

FRAUD_DECISIONS = Counter(
    "referral_fraud_decisions_total",
    "Conversions screened by attribution-service, by decision (allow, review, deny).",
    ["decision"],
)

# Series of the known label values exist from the start at 0, so rate() and ratios in the
# alerts are defined before the first event rather than absent.
for _decision in ("allow", "review", "deny"):
    FRAUD_DECISIONS.labels(decision=_decision)

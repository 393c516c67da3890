"""notification-service's own counters (exported on /metrics beside servicekit's per-app ones;
the dashboard and the alerts in deploy/ read them by name)."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOK_ATTEMPTS = Counter(
    "referral_webhook_attempts_total",
    "Webhook delivery attempts by notification-service, by outcome (succeeded, failed).",
    ["outcome"],
)

# Series of the known label values exist from the start at 0, so rate() and ratios in the
# alerts are defined before the first event rather than absent.
for _outcome in ("succeeded", "failed"):
    WEBHOOK_ATTEMPTS.labels(outcome=_outcome)

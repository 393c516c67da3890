from __future__ import annotations

from pydantic import Field

from servicekit.secretbox import DEV_SECRETS_KEY, SecretBox, box
from servicekit.settings import ServiceSettings

# Public (it is in this repository): accepted only with ENVIRONMENT=dev (servicekit.settings).
DEV_UNSUBSCRIBE_KEY = "dev-only-unsubscribe-key"


class Settings(ServiceSettings):
    http_port: int = 8004
    # Production refuses plain http and private destinations (SSRF); tests and local runs
    # (devstack) turn these on to deliver to receivers on loopback.
    webhook_allow_http: bool = False
    webhook_allow_private_networks: bool = False
    # Whole attempt, connect to last byte read: a receiver that drips its answer is cut off too.
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    webhook_poll_interval_seconds: float = Field(default=1.0, gt=0)
    # Attempts in flight to one endpoint from one replica: a slow endpoint uses its own slots
    # and never the others'.
    webhook_per_endpoint_concurrency: int = Field(default=4, ge=1, le=100)
    # Attempts in flight in one replica altogether.
    webhook_max_in_flight: int = Field(default=200, ge=1)
    # Delay before each retry after a failed attempt; its length is the number of retries.
    webhook_retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
    )
    # Spread of each delay, as a fraction either side: retries of many deliveries that failed
    # together (an endpoint's outage) do not all return at the same instant.
    webhook_retry_jitter: float = Field(default=0.1, ge=0, lt=1)
    # How much of each response the delivery log keeps.
    webhook_response_body_limit: int = Field(default=2048, ge=0, le=65536)
    # For how long a replaced secret keeps signing next to the new one after a rotation.
    webhook_secret_rotation_overlap_hours: float = Field(default=24.0, ge=0, le=24 * 30)
    # Envelope key (a Fernet key: `Fernet.generate_key()`) sealing endpoints' signing secrets at
    # rest (servicekit.secretbox). To rotate: the new key here, the previous ones in
    # SECRETS_OLD_KEYS (comma-separated) until the resealer has moved every row to the new one.
    secrets_key: str = Field(default=DEV_SECRETS_KEY, min_length=44, max_length=44)
    secrets_old_keys: str = ""
    # An endpoint whose every attempt has failed for this long is disabled (endpoint.disabled).
    webhook_disable_after_failing_days: float = Field(default=5.0, gt=0)
    # Webhook messages whose deliveries are all settled keep their body (and their attempts the
    # receiver's answers) this long; then retention clears them, and they can no longer be
    # resent or replayed.
    webhook_body_retention_days: float = Field(default=90.0, gt=0)
    # Most failed deliveries one replay request re-queues.
    webhook_replay_limit: int = Field(default=10000, ge=1)

    # --- email ---
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    # Implicit TLS (port 465) or STARTTLS; local relays and tests use neither.
    smtp_use_tls: bool = False
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    email_from: str = "Referrals <referrals@localhost>"
    # Public base URL of this service: unsubscribe links in mails point here.
    public_base_url: str = "http://127.0.0.1:8004"
    # Key of the HMAC in unsubscribe tokens (rotate like any secret; old links then stop working
    # and show the page that explains it).
    email_unsubscribe_key: str = Field(default=DEV_UNSUBSCRIBE_KEY, min_length=16)
    email_poll_interval_seconds: float = Field(default=1.0, gt=0)
    email_max_in_flight: int = Field(default=20, ge=1, le=500)
    # Wait before each retry of a mail the SMTP server refused for now (4xx, connection).
    email_retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [60.0, 300.0, 1800.0, 7200.0, 21600.0], min_length=1
    )
    # Settled mails keep what they showed (context), their address and the SMTP server's last
    # answer this long; then retention clears them (the row and its status stay).
    email_body_retention_days: float = Field(default=90.0, gt=0)
    # Invites one advocate may send per rolling 24 hours.
    invite_limit_per_day: int = Field(default=20, ge=1, le=1000)
    # Friends one invite request may name.
    invite_max_recipients: int = Field(default=10, ge=1, le=100)

    def secret_box(self) -> SecretBox:
        return box(self.secrets_key, self.secrets_old_keys)

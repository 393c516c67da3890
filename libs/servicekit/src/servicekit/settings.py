"""Settings every service reads from the environment (documented in docs/operations.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from referral_events.kafka import KafkaSecurity
from servicekit.rls import APP_ROLE

# The public dev default of PRIVACY_HASH_KEY: refused outside ENVIRONMENT=dev.
DEV_PRIVACY_HASH_KEY = "dev-only-privacy-hash-key"


class ApiKeyEntry(BaseModel):
    """One API key as configured: only its SHA-256 is ever stored or configured."""

    tenant_id: str = Field(min_length=1)
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[str] = Field(default_factory=lambda: ["*"])
    name: str = ""


class InsecureSettings(RuntimeError):
    """A secret still holds its public dev default outside dev: the service refuses to start."""


def refuse_dev_defaults(settings: ServiceSettings, secrets: dict[str, tuple[str, str]]) -> None:
    """`secrets`: environment variable -> (its value, its dev default). Outside ENVIRONMENT=dev
    a secret left at its dev default stops the service at start, naming the variable."""
    if settings.environment == "dev":
        return
    left = [name for name, (value, default) in secrets.items() if value == default]
    if left:
        raise InsecureSettings(
            f"{', '.join(left)} still {'holds' if len(left) == 1 else 'hold'} the public dev "
            f"default while ENVIRONMENT={settings.environment!r}: set "
            f"{'it' if len(left) == 1 else 'them'} from a Secret (or ENVIRONMENT=dev for a "
            "local run)"
        )


def refuse_dev_only(settings: ServiceSettings, switches: dict[str, bool]) -> None:
    """`switches`: environment variable -> whether it is on. Settings only a local run or a
    test may turn on (a clock that can be moved, say): outside ENVIRONMENT=dev one that is on
    stops the service at start, naming it."""
    if settings.environment == "dev":
        return
    on = [name for name, enabled in switches.items() if enabled]
    if on:
        raise InsecureSettings(
            f"{', '.join(on)} {'is' if len(on) == 1 else 'are'} honoured only with "
            f"ENVIRONMENT=dev, not ENVIRONMENT={settings.environment!r}: leave "
            f"{'it' if len(on) == 1 else 'them'} unset"
        )


def privacy_key_default(settings: ServiceSettings) -> dict[str, tuple[str, str]]:
    """PRIVACY_HASH_KEY for `refuse_dev_defaults`: every service checks it beside its own."""
    return {"PRIVACY_HASH_KEY": (settings.privacy_hash_key, DEV_PRIVACY_HASH_KEY)}


class PlanRate(BaseModel):
    """A token bucket of `burst` tokens refilled at `per_second`: one request, one token."""

    per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


def _default_plans() -> dict[str, PlanRate]:
    return {
        "free": PlanRate(per_second=10, burst=20),
        "standard": PlanRate(per_second=100, burst=200),
        "enterprise": PlanRate(per_second=1000, burst=2000),
    }


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_nested_delimiter="__")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/referral"
    db_pool_min_size: int = Field(default=2, ge=1)
    db_pool_max_size: int = Field(default=10, ge=1)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # Dev and tests create missing topics at start; production declares them (KafkaTopic CRs).
    kafka_create_topics: bool = True
    kafka_topic_replication_factor: int = Field(default=1, ge=1)
    # Namespaces every topic and consumer group, for several environments on one cluster
    # (and one isolated namespace per test).
    kafka_topic_prefix: str = ""
    # Overrides the partition counts of created topics (small brokers in dev and tests).
    kafka_topic_partitions: int | None = Field(default=None, ge=1)

    # How every Kafka client of the service authenticates (docs/security.md). PLAINTEXT in dev
    # and tests; production: SASL_SSL with the service's own SCRAM user (Strimzi KafkaUser),
    # whose ACLs let it write only its own topics.
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None

    # JSON list of {"tenant_id", "key_sha256", "scopes"}; mount it from a Secret.
    # Only the bootstrap platform-admin keys of a fresh install: workspace keys are created
    # through link-service and reach every service as events (servicekit.keys).
    api_keys: list[ApiKeyEntry] = Field(default_factory=list)
    # How long a replica trusts what it read of a workspace key (revocation takes effect
    # within this plus the consumer's lag; the issue asks for 2 s end to end).
    api_key_cache_ttl_seconds: float = Field(default=1.0, gt=0, le=1)
    # Requests per workspace key, by the workspace's plan (per replica; bootstrap keys and plans
    # not listed are not limited). JSON: {"plan": {"per_second": r, "burst": b}}.
    rate_limit_plans: dict[str, PlanRate] = Field(default_factory=_default_plans)
    # How often a replica records when its workspace keys were last used (one statement or
    # one event per workspace, never a write per request): last_used_at lags by up to this.
    key_usage_flush_seconds: float = Field(default=60.0, gt=0)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    shutdown_grace_seconds: float = Field(default=20.0, gt=0)

    outbox_batch_size: int = Field(default=500, ge=1)
    outbox_poll_interval_seconds: float = Field(default=1.0, gt=0)
    # After a wake-up the relay waits this long before reading, so rows committed meanwhile go
    # out in the same SELECT, produce request and UPDATE (0: read at once).
    outbox_linger_seconds: float = Field(default=0.0, ge=0, le=1)
    # Hours a published outbox row is kept (a copy of what went out), then pruned; 0: deleted as
    # it is published (link-service, a row per click). A service whose own code reads its outbox
    # after the relay (attribution-service's analytics fold) must keep them.
    outbox_keep_published_hours: int = Field(default=72, ge=0, le=720)
    # Attempts at a row the broker refuses for what it is (too large) before it is parked.
    outbox_max_attempts: int = Field(default=5, ge=1)
    # Inbox rows are kept longer than any topic keeps its events (30 days), then pruned.
    inbox_retention_days: float = Field(default=35.0, ge=31)
    # Retention (servicekit.retention; link, attribution and notification): how often the
    # pruner runs and how many rows one of its transactions takes.
    retention_interval_seconds: float = Field(default=300.0, gt=0)
    retention_batch_size: int = Field(default=1000, ge=1, le=100_000)
    # Nothing waits without bound: a statement, a lock wait, a transaction left open idle.
    # 0 turns one off.
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    db_lock_timeout_ms: int = Field(default=10_000, ge=0)
    db_idle_in_transaction_timeout_ms: int = Field(default=60_000, ge=0)
    # The role the service's connections act as (`role` startup setting): `referral_app`, which
    # the migrations create, owns no table and cannot bypass row-level security; migrations act
    # as the login role, which owns the tables. Empty: the login role itself (a deployment
    # whose DATABASE_URL already logs in as such a role, neither owner nor superuser).
    database_role: str = APP_ROLE
    consumer_max_attempts: int = Field(default=5, ge=1)
    # A consumer commits its handled offsets at most this often (and when it idles or stops):
    # an offset commit per poll was a log append at the broker per poll per group. What a
    # crash leaves uncommitted is read again and dropped by the inbox. 0: after every poll.
    consumer_commit_interval_seconds: float = Field(default=0.25, ge=0, le=5)
    run_consumers: bool = True
    # The hot paths answered before FastAPI (servicekit.front); false: FastAPI serves everything.
    front_door: bool = True
    # Largest request body of any route without a limit of its own (servicekit.bodylimit):
    # past it 413 before the body is read or parsed. No JSON body the API takes is near it.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    # Personal data requests (docs/privacy.md). The key of the tombstones and pseudonyms of
    # erased people: the SAME secret in every service (link-service computes them, every service
    # checks them); from a Secret in production.
    privacy_hash_key: str = Field(default=DEV_PRIVACY_HASH_KEY, min_length=8)
    # How stale a consumer's in-memory tombstones may be (one read per poll at most this often;
    # another replica's erasure is in force here within this).
    privacy_tombstone_refresh_seconds: float = Field(default=1.0, gt=0, le=60)

    log_level: str = "INFO"
    log_json: bool = True

    # Where the service runs. "dev" (devstack, the test plugin and docker compose set it)
    # accepts the public dev defaults of secret keys; anything else refuses to start with one
    # (refuse_dev_defaults). The default is "production" so that a deployment that forgets
    # to say fails closed instead of running with keys published in this repository.
    environment: str = Field(default="production", min_length=1)

    def kafka_security(self) -> KafkaSecurity:
        """The Kafka settings above as what every client of the service is built with."""
        password = self.kafka_sasl_password
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username,
            password=password.get_secret_value() if password is not None else None,
            cafile=self.kafka_ssl_cafile,
            certfile=self.kafka_ssl_certfile,
            keyfile=self.kafka_ssl_keyfile,
        )

    def db_session_settings(self) -> dict[str, str]:
        """The timeouts above (and the role) as session settings of every connection the
        service opens."""
        return {
            **self.db_role_settings(),
            "statement_timeout": str(self.db_statement_timeout_ms),
            "lock_timeout": str(self.db_lock_timeout_ms),
            "idle_in_transaction_session_timeout": str(self.db_idle_in_transaction_timeout_ms),
        }

    def db_role_settings(self) -> dict[str, str]:
        return {"role": self.database_role} if self.database_role else {}

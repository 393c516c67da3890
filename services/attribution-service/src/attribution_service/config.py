from __future__ import annotations

from pydantic import Field

from servicekit.keyedhash import KeyedHash
from servicekit.secretbox import DEV_SECRETS_KEY, SecretBox, box
from servicekit.settings import ServiceSettings

# Public (it is in this repository): accepted only with ENVIRONMENT=dev (servicekit.settings).
DEV_IP_HASH_KEY = "dev-only-ip-hash-key"


class Settings(ServiceSettings):
    http_port: int = 8002
    # How long a conversion naming a click or code not seen yet waits for it (consumer lag)
    # before it is decided without that evidence. A conversion that occurred longer ago than
    # this and names an unknown click or code is refused at once: lag cannot explain it.
    evidence_grace_seconds: int = Field(default=600, ge=1)
    # Group commit of POST /v1/conversions: writer loops, each deciding what has queued up (at
    # most CONVERSION_BATCH_MAX requests) in one transaction. 0: one transaction per request.
    conversion_writers: int = Field(default=2, ge=0, le=32)
    conversion_batch_max: int = Field(default=100, ge=1, le=1000)
    # How long a writer lets its batch fill while another writer's batch is committing.
    conversion_batch_linger_seconds: float = Field(default=0.002, ge=0, le=0.1)
    # After a wake-up the outbox relay waits this long before reading: the events of several
    # group commits go out in one SELECT, produce request and UPDATE (less relay, Postgres and
    # Kafka work per conversion, a few ms more until on Kafka; no request waits for it).
    outbox_linger_seconds: float = Field(default=0.01, ge=0, le=1)
    # Growth analytics folds this service's own events from its outbox, whether or not the relay
    # published them yet (analytics.repository.take_outboxed): published rows must stay a while.
    outbox_keep_published_hours: int = Field(default=72, ge=1, le=720)
    pending_sweep_interval_seconds: float = Field(default=15.0, gt=0)
    # Growth analytics folds the outbox's events in batches: when fewer than a batch waited, the
    # folder sleeps this long. A fold's writes are per read-model row (an advocate's counters and
    # leaderboard rows, a program's day), so the events of a longer wait share them: measured on
    # the conversions bench, the fold's Postgres CPU per conversion fell from 0.116 ms (0.5 s,
    # 500 events) to 0.034 ms (2 s, 10,000). The read models lag by about this much.
    analytics_fold_interval_seconds: float = Field(default=2.0, gt=0, le=60)
    analytics_fold_batch: int = Field(default=10000, ge=1, le=100000)
    # The same secret as link-service's IP_HASH_KEY, so a conversion's IP hash compares with
    # the hashes on clicks. Also keys the hash of device ids.
    ip_hash_key: str = Field(default=DEV_IP_HASH_KEY, min_length=8)
    # During a rotation of IP_HASH_KEY: the key it replaces. Conversions are then hashed under
    # both, so the advocate's sightings stored before the rotation still match the same address
    # (servicekit.keyedhash). Unset once the longest network window has passed.
    ip_hash_previous_key: str | None = Field(default=None, min_length=8)
    # Envelope key (a Fernet key: `Fernet.generate_key()`) sealing the Shopify/Stripe secrets at
    # rest (servicekit.secretbox). To rotate: the new key here, the previous ones in
    # SECRETS_OLD_KEYS (comma-separated) until the resealer has moved every row to the new one.
    secrets_key: str = Field(default=DEV_SECRETS_KEY, min_length=44, max_length=44)
    secrets_old_keys: str = ""
    # Stripe's own default: a signature older than this is refused (replay window).
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    # Shopify/Stripe webhook secrets are cached per replica so signatures are checked before a
    # database connection is taken; a rotated or deleted secret reaches other replicas in this.
    integration_cache_seconds: float = Field(default=5.0, gt=0, le=60)
    # Shopify retries a failed delivery 8 times over 4 hours with the same X-Shopify-Triggered-At;
    # a delivery older than this is refused as stale.
    shopify_webhook_tolerance_seconds: int = Field(default=5 * 3600, ge=60)

    def ip_hasher(self) -> KeyedHash:
        return KeyedHash.of(self.ip_hash_key, self.ip_hash_previous_key)

    def secret_box(self) -> SecretBox:
        return box(self.secrets_key, self.secrets_old_keys)

from __future__ import annotations

from pydantic import Field

from servicekit.settings import ServiceSettings

# Public (it is in this repository): accepted only with ENVIRONMENT=dev (servicekit.settings).
DEV_IP_HASH_KEY = "dev-only-ip-hash-key"


class Settings(ServiceSettings):
    http_port: int = 8001
    # Base of the share links handed to advocates: the public host of /r/{code}.
    public_base_url: str = "http://127.0.0.1:8001"
    # Key of the HMAC that replaces client IPs in click records (rotate like any secret).
    ip_hash_key: str = Field(default=DEV_IP_HASH_KEY, min_length=8)
    # Clicks older than this are rolled into per-day counts (click_days) and deleted
    # (servicekit.retention). Only the portal's counts read them here (attribution keeps its own
    # copy, with a per-program retention), and those survive in click_days.
    click_retention_days: int = Field(default=90, ge=1, le=3650)
    # Behind a load balancer: the header holding the client address (e.g. x-forwarded-for).
    # Unset: the TCP peer address.
    client_ip_header: str | None = None
    # How many trusted proxies append to that header (the ingress controller: 1; a cloud load
    # balancer in front of it: 2). The client is the entry the outermost trusted proxy added,
    # counted from the right: the entries left of it are whatever the client sent (spoofable).
    trusted_proxy_hops: int = Field(default=1, ge=1, le=10)
    # Length of random codes for programs that do not set their own code format.
    code_length: int = Field(default=8, ge=6, le=16)

    # An advocate may set a vanity code at most this many times per window.
    vanity_changes_max: int = Field(default=3, ge=1)
    vanity_changes_window_days: int = Field(default=30, ge=1)

    # Redirect lookups are cached per replica; events invalidate entries at once, the TTL
    # bounds staleness should an invalidation ever be missed.
    code_cache_size: int = Field(default=100_000, ge=0)
    code_cache_ttl_seconds: float = Field(default=60.0, gt=0)
    # Unknown-code answers of /r/ per client address (token bucket, per replica): codes cannot
    # be probed cheaply. Known codes always redirect.
    redirect_unknown_code_per_second: float = Field(default=1.0, gt=0)
    redirect_unknown_code_burst: int = Field(default=30, ge=1)
    # Unknown codes are remembered briefly so a flood of bad links does not reach Postgres.
    code_cache_negative_ttl_seconds: float = Field(default=2.0, ge=0)

    # Redirects share the event loop with the relay: smaller batches keep a backlog from
    # stalling them (at a few more UPDATEs).
    outbox_batch_size: int = Field(default=100, ge=1)
    # After a wake-up the relay waits this long before reading the outbox, so the clicks of
    # many group commits go out in one SELECT, produce request and UPDATE: per click far less
    # Postgres, Kafka and relay work at moderate load, for a few ms more until on Kafka (the
    # redirect never waits for that).
    outbox_linger_seconds: float = Field(default=0.02, ge=0, le=1)
    # A click's outbox row is deleted as it is published: nothing here reads it afterwards, and
    # marking it (a new row version and its index entries), then pruning it, cost Postgres more
    # per click than writing it (docs/performance.md, 2026-12-04).
    outbox_keep_published_hours: int = Field(default=0, ge=0, le=720)

    # Group commit of clicks: one statement per batch; a redirect answers after its batch.
    click_batch_max: int = Field(default=500, ge=1)
    click_writers: int = Field(default=3, ge=1, le=8)
    # How long a redirect waits for its click to commit before answering without click id.
    click_commit_timeout_seconds: float = Field(default=5.0, gt=0)

    # Bulk enrollment: rows per transaction, and the largest accepted upload.
    enrollment_chunk_rows: int = Field(default=1000, ge=1, le=10_000)
    # 16 MiB holds 100,000 rows of ~160 bytes; the ingress' proxy-body-size for the upload
    # route (deploy/k8s/base/ingress.yaml) is the same, so neither refuses what the other takes.
    enrollment_max_upload_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Rows one upload may hold: past it the upload is refused (413) while it streams in.
    enrollment_max_rows: int = Field(default=100_000, ge=1)
    # Tries of a job whose chunks keep failing (backing off, other jobs moving meanwhile) before
    # its remaining rows are marked failed and the job finishes.
    enrollment_max_attempts: int = Field(default=5, ge=1, le=100)
    enrollment_poll_interval_seconds: float = Field(default=1.0, gt=0)

    # Advocate tokens (GET /v1/me, the widget): HS256 keys; the first signs, every one listed
    # verifies. Rotating (prepend a new key, drop the old one after the longest token lifetime)
    # revokes every token signed with a dropped key. At least 32 characters each.
    advocate_token_keys: list[str] = Field(
        default=["dev-only-advocate-token-key-change-me!"], min_length=1
    )
    # Lifetime of a token when the merchant asks for none (the most it may ask is 24 h).
    advocate_token_ttl_seconds: int = Field(default=3600, ge=60, le=86_400)
    # Connections of GET /v1/me's own pool (portal.front.PageReads), beside DB_POOL_MAX_SIZE.
    portal_db_pool_size: int = Field(default=4, ge=1, le=100)
    # Personal data exports (docs/privacy.md): each service's document travels in events of at
    # most this many bytes of JSON (Kafka's message limit is 1 MB; the envelope adds a little).
    privacy_export_chunk_bytes: int = Field(default=256 * 1024, ge=1024, le=512 * 1024)
    # How often the share-reminder schedule is looked at, and how many rows one pass takes.
    reminder_poll_interval_seconds: float = Field(default=60.0, gt=0)
    reminder_batch_size: int = Field(default=500, ge=1, le=10_000)

"""DDL of the outbox and inbox tables, created by each service's first migration in its own
schema. Versioned constants: a migration that used V1 keeps meaning V1 forever; a change is V2."""

OUTBOX_INBOX_V1 = """
CREATE TABLE outbox (
    seq          bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    topic        text NOT NULL,
    key          text NOT NULL,
    payload      bytea NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

CREATE TABLE inbox (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    event_type   text NOT NULL,
    topic        text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
"""

DROP_OUTBOX_INBOX_V1 = "DROP TABLE IF EXISTS inbox; DROP TABLE IF EXISTS outbox;"

# Outbox rows the broker keeps refusing (a message too large, a topic it will not take) are
# parked after bounded attempts instead of blocking every row behind them; the inbox is pruned by
# age, read through a BRIN index (cheap to keep up on an insert-ordered table, unlike a b-tree).
OUTBOX_INBOX_V2 = """
ALTER TABLE outbox
    ADD COLUMN attempts   integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error text,
    ADD COLUMN parked_at  timestamptz;
CREATE INDEX outbox_parked ON outbox (seq) WHERE parked_at IS NOT NULL;
-- The relay's read names both conditions; an index with exactly that predicate keeps its plan an
-- ordered index scan (with the old one, the never-analysed parked_at made the planner guess
-- that few unpublished rows qualify and sort instead: twice the Postgres CPU per redirect).
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX inbox_processed_at ON inbox USING brin (processed_at);
"""

DROP_OUTBOX_INBOX_V2 = """
DROP INDEX IF EXISTS inbox_processed_at;
DROP INDEX IF EXISTS outbox_pending;
DROP INDEX IF EXISTS outbox_parked;
ALTER TABLE outbox DROP COLUMN parked_at, DROP COLUMN last_error, DROP COLUMN attempts;
"""

# The relay's retention prune (outbox.prune_published: published rows older than the retention,
# every 10 minutes) read the whole outbox, which keeps up to 72 hours of events. A BRIN index on
# published_at lets it read only the old block ranges: marked rows are new row versions written
# at the table's end, in the order they were published, and a BRIN entry is cheap to keep up.
OUTBOX_BY_PUBLISHED_V3 = "CREATE INDEX outbox_published ON outbox USING brin (published_at);"
DROP_OUTBOX_BY_PUBLISHED_V3 = "DROP INDEX IF EXISTS outbox_published;"

# A service's copy of link-service's API keys (referral_events.contracts.link ApiKey*), fed by
# its consumer of link.events (servicekit.keys.KEY_HANDLERS) and read by its authenticator
# (servicekit.keys.KeyStore). link-service's own `api_keys` table has these columns and more.
API_KEYS_COPY_V1 = """
CREATE TABLE api_keys (
    key_hash     text PRIMARY KEY,
    id           text NOT NULL UNIQUE,
    workspace_id text NOT NULL,
    scopes       text[] NOT NULL,
    plan         text NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    version      integer NOT NULL
);
"""

DROP_API_KEYS_COPY_V1 = "DROP TABLE IF EXISTS api_keys;"

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

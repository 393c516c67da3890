"""webhook endpoints, their secrets, messages, deliveries and attempts; outbox and inbox

Revision ID: 0001
"""

from alembic import op

from referral_events.sql import DROP_OUTBOX_INBOX_V1, OUTBOX_INBOX_V1

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.execute(OUTBOX_INBOX_V1)
    op.execute(
        """
        CREATE TABLE webhook_endpoints (
            id              text PRIMARY KEY,
            tenant_id       text NOT NULL,
            url             text NOT NULL,
            description     text,
            -- Exact type names or "prefix.*" patterns; empty takes every delivered type.
            event_types     text[] NOT NULL DEFAULT '{}',
            enabled         boolean NOT NULL DEFAULT true,
            -- Why it stopped: 'gone' (the receiver answered 410); later 'failing', 'manual'.
            disabled_reason text,
            disabled_at     timestamptz,
            -- First failed attempt since the last success: what "failing for 5 days" reads.
            failing_since   timestamptz,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at);

        -- Apart from the endpoint so a rotation adds a row and gives the old one an expiry:
        -- every unexpired secret signs, so receivers holding either verify during the switch.
        CREATE TABLE webhook_endpoint_secrets (
            id          bigserial PRIMARY KEY,
            endpoint_id text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
            secret      text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz
        );
        CREATE INDEX webhook_endpoint_secrets_endpoint ON webhook_endpoint_secrets (endpoint_id);

        -- One per consumed event that at least one endpoint wants. The id is the CloudEvent
        -- id, sent as webhook-id: receivers deduplicate on it. body is the exact JSON every
        -- attempt signs and sends.
        CREATE TABLE webhook_messages (
            id          text PRIMARY KEY,
            tenant_id   text NOT NULL,
            event_type  text NOT NULL,
            event_time  timestamptz NOT NULL,
            body        text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX webhook_messages_tenant ON webhook_messages (tenant_id, created_at);

        -- One per (endpoint, message) = (endpoint, event id): a redelivered event finds its
        -- row. While pending, next_attempt_at is when it is due or, while an attempt is in
        -- flight, when that attempt's lease runs out (a crashed dispatcher's work comes back).
        CREATE TABLE webhook_deliveries (
            id               text PRIMARY KEY,
            tenant_id        text NOT NULL,
            endpoint_id      text NOT NULL REFERENCES webhook_endpoints (id),
            message_id       text NOT NULL REFERENCES webhook_messages (id),
            status           text NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'delivered', 'failed')),
            attempts         integer NOT NULL DEFAULT 0,
            next_attempt_at  timestamptz,
            last_status_code integer,
            last_error       text,
            delivered_at     timestamptz,
            failed_at        timestamptz,
            created_at       timestamptz NOT NULL DEFAULT now(),
            updated_at       timestamptz NOT NULL DEFAULT now(),
            UNIQUE (endpoint_id, message_id),
            CHECK (status <> 'pending' OR next_attempt_at IS NOT NULL)
        );
        CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
            WHERE status = 'pending';
        CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, created_at, id);
        CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (tenant_id, failed_at)
            WHERE status = 'failed';

        -- Every attempt as it happened: the delivery log.
        CREATE TABLE webhook_attempts (
            delivery_id   text NOT NULL REFERENCES webhook_deliveries (id),
            attempt       integer NOT NULL,
            attempted_at  timestamptz NOT NULL,
            status_code   integer,
            latency_ms    integer NOT NULL,
            response_body text,
            error         text,
            outcome       text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
            PRIMARY KEY (delivery_id, attempt)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE webhook_attempts, webhook_deliveries, webhook_messages, "
        "webhook_endpoint_secrets, webhook_endpoints"
    )
    op.execute(DROP_OUTBOX_INBOX_V1)

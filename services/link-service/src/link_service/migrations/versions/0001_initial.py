"""programs, advocates, codes, clicks; outbox and inbox

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
        CREATE TABLE programs (
            id              text PRIMARY KEY,
            tenant_id       text NOT NULL,
            name            text NOT NULL,
            status          text NOT NULL
                            CHECK (status IN ('draft', 'active', 'paused', 'ended')),
            landing_url     text NOT NULL,
            allowed_domains text[] NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX programs_tenant ON programs (tenant_id, created_at);

        -- Personal data lives only in advocates.email and advocates.name (erasure targets).
        CREATE TABLE advocates (
            id                text PRIMARY KEY,
            tenant_id         text NOT NULL,
            program_id        text NOT NULL REFERENCES programs (id),
            customer_id       text NOT NULL,
            email             text,
            name              text,
            locale            text,
            marketing_consent boolean NOT NULL DEFAULT false,
            blocked           boolean NOT NULL DEFAULT false,
            created_at        timestamptz NOT NULL DEFAULT now(),
            UNIQUE (program_id, customer_id)
        );
        CREATE INDEX advocates_tenant ON advocates (tenant_id);

        -- Codes are unique platform-wide (the public /r/{code} carries no tenant), compared
        -- case-insensitively through code_key = upper(code).
        CREATE TABLE codes (
            code_key    text PRIMARY KEY,
            code        text NOT NULL,
            tenant_id   text NOT NULL,
            program_id  text NOT NULL REFERENCES programs (id),
            advocate_id text NOT NULL REFERENCES advocates (id),
            kind        text NOT NULL CHECK (kind IN ('random', 'vanity')),
            created_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX codes_advocate ON codes (advocate_id);

        -- ip_hash is a keyed HMAC of the address (never the address): personal data.
        CREATE TABLE clicks (
            id                text PRIMARY KEY,
            tenant_id         text NOT NULL,
            code              text NOT NULL,
            program_id        text NOT NULL,
            advocate_id       text NOT NULL,
            channel           text,
            clicked_at        timestamptz NOT NULL,
            user_agent_family text,
            device_class      text,
            referrer_host     text,
            ip_hash           text,
            is_bot            boolean NOT NULL DEFAULT false,
            counts            boolean NOT NULL
        );
        CREATE INDEX clicks_advocate ON clicks (advocate_id, clicked_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE clicks, codes, advocates, programs")
    op.execute(DROP_OUTBOX_INBOX_V1)

"""webhook resend rounds and test messages; email: contacts, programs, templates, suppressions,
the email queue

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute(
        """
        -- A resend or replay starts a new round of the retry schedule on the same delivery:
        -- the attempt number within the round is attempts - round_start, while attempt numbers
        -- in the log keep growing (they are the log's key).
        ALTER TABLE webhook_deliveries ADD COLUMN round_start integer NOT NULL DEFAULT 0;
        CREATE INDEX webhook_deliveries_endpoint_failed ON webhook_deliveries
            (endpoint_id, failed_at) WHERE status = 'failed';

        -- Programs as link-service last described them: the name mails show and the locale
        -- templates fall back to.
        CREATE TABLE email_programs (
            tenant_id      text NOT NULL,
            program_id     text NOT NULL,
            name           text NOT NULL,
            default_locale text NOT NULL DEFAULT 'en',
            version        integer NOT NULL DEFAULT 0,
            updated_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, program_id)
        );

        -- Our own copy of whom we may write to. Personal data lives in exactly two columns of
        -- this table (email, name) and in emails.to_address; erasure clears those.
        -- kind 'advocate': contact_id is the advocate id (from link.events);
        -- kind 'friend': contact_id is the friend's customer id (from referral.attributed).
        CREATE TABLE email_contacts (
            tenant_id         text NOT NULL,
            kind              text NOT NULL CHECK (kind IN ('advocate', 'friend')),
            contact_id        text NOT NULL,
            program_id        text NOT NULL,
            email             text,
            name              text,
            locale            text,
            marketing_consent boolean NOT NULL DEFAULT false,
            blocked           boolean NOT NULL DEFAULT false,
            code              text,
            link_url          text,
            -- The producer's version of the advocate's state: an older state arriving late is
            -- ignored.
            version           integer NOT NULL DEFAULT 0,
            updated_at        timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, kind, contact_id)
        );

        -- A merchant's own wording of a built-in template for one program and locale.
        CREATE TABLE email_templates (
            tenant_id  text NOT NULL,
            program_id text NOT NULL,
            template   text NOT NULL,
            locale     text NOT NULL,
            subject    text NOT NULL,
            html       text NOT NULL,
            text_body  text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, program_id, template, locale)
        );

        -- Addresses that get nothing from this tenant, whatever the template. The address is
        -- stored lower-cased.
        CREATE TABLE email_suppressions (
            tenant_id  text NOT NULL,
            address    text NOT NULL,
            reason     text NOT NULL
                       CHECK (reason IN ('unsubscribed', 'bounced', 'complained', 'manual')),
            detail     text,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, address)
        );

        -- The email queue (an outbox for SMTP). A row is written in the same transaction as the
        -- event or request that causes it; the unique key makes that at most one row per
        -- (cause, recipient, template) however often the cause is delivered. The sender claims
        -- rows with a lease, renders and talks SMTP with no transaction open, then marks them
        -- sent: a crash in between sends the row again after the lease (same Message-ID), the
        -- one duplicate SMTP cannot rule out.
        -- Contacts are looked up when the mail is sent, not when it is queued: a reward event
        -- may be handled before the event that tells us the friend's address (another topic),
        -- and the mail then waits for it instead of being lost.
        -- recipient_kind 'invitee' is a friend invited by address: recipient_id is the SHA-256
        -- of the lower-cased address and to_address holds the address itself.
        CREATE TABLE emails (
            id                text PRIMARY KEY,
            tenant_id         text NOT NULL,
            template          text NOT NULL,
            cause_key         text NOT NULL,
            recipient_kind    text NOT NULL
                              CHECK (recipient_kind IN ('advocate', 'friend', 'invitee')),
            recipient_id      text NOT NULL,
            advocate_id       text,
            program_id        text NOT NULL,
            to_address        text,
            -- Non-personal facts of the cause (amounts, codes) the template shows; for invites
            -- also the advocate's own message.
            context           jsonb NOT NULL DEFAULT '{}',
            locale            text,
            status            text NOT NULL DEFAULT 'queued'
                              CHECK (status IN ('queued', 'sent', 'suppressed', 'failed')),
            suppressed_reason text,
            attempts          integer NOT NULL DEFAULT 0,
            next_attempt_at   timestamptz,
            last_error        text,
            sent_at           timestamptz,
            created_at        timestamptz NOT NULL DEFAULT now(),
            updated_at        timestamptz NOT NULL DEFAULT now(),
            UNIQUE (tenant_id, cause_key, recipient_kind, recipient_id, template),
            CHECK (status <> 'queued' OR next_attempt_at IS NOT NULL)
        );
        CREATE INDEX emails_due ON emails (next_attempt_at) WHERE status = 'queued';
        CREATE INDEX emails_invites ON emails (tenant_id, advocate_id, created_at)
            WHERE template = 'invite';
        CREATE INDEX emails_recipient ON emails (tenant_id, recipient_kind, recipient_id);
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE emails, email_suppressions, email_templates, email_contacts, email_programs"
    )
    op.execute("DROP INDEX webhook_deliveries_endpoint_failed")
    op.execute("ALTER TABLE webhook_deliveries DROP COLUMN round_start")

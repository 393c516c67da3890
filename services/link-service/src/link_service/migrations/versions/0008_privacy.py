"""personal data requests (issue 19): the tombstones of erased people, which every consumer
checks before it writes (referral_events.privacy); the requests
(who asked, when, which services confirmed) and the parts each service sends back

Revision ID: 0008
"""

from alembic import op

from referral_events.privacy import DROP_TOMBSTONES_SQL_V1, TOMBSTONES_SQL_V1

revision = "0008"
# Other work adds revisions to this service beside this one: the lead re-chains this on merge.
down_revision = "0007"


def upgrade() -> None:
    op.execute(TOMBSTONES_SQL_V1)
    op.execute(
        """
        -- One export or erasure: who asked and when; the subject only as tombstones (keyed
        -- hashes), never in clear, so the audit outlives the person.
        CREATE TABLE privacy_requests (
            id           text PRIMARY KEY,
            tenant_id    text NOT NULL,
            kind         text NOT NULL CHECK (kind IN ('export', 'erasure')),
            subject      text[] NOT NULL,
            requested_by text NOT NULL,
            requested_at timestamptz NOT NULL DEFAULT now(),
            completed_at timestamptz
        );
        CREATE INDEX privacy_requests_tenant ON privacy_requests (tenant_id, requested_at);
        -- Each service's confirmation; an export's document arrives in `parts` chunks.
        CREATE TABLE privacy_request_parts (
            request_id   text NOT NULL REFERENCES privacy_requests (id),
            service      text NOT NULL,
            part         integer NOT NULL,
            parts        integer NOT NULL,
            chunk        text NOT NULL DEFAULT '',
            row_counts   jsonb NOT NULL DEFAULT '{}',
            done_at      timestamptz NOT NULL,
            received_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (request_id, service, part)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS privacy_request_parts; DROP TABLE IF EXISTS privacy_requests;")
    op.execute(DROP_TOMBSTONES_SQL_V1)

"""advocate sightings (issue #20): where an advocate was seen (enrolment through the API with a
network or device, their refer-a-friend page), at most one a day per network and device

Revision ID: 0010
(Numbered by the lead; down_revision is this worktree's head: the lead re-chains it on merge.)
"""

from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.execute(
        """
        -- Hashes only (the keyed hash of IPs and device ids): personal data. The unique index
        -- makes a page opened many times a day one sighting (and one advocate.sighted.v1).
        CREATE TABLE advocate_sightings (
            id          text PRIMARY KEY,
            tenant_id   text NOT NULL,
            advocate_id text NOT NULL,
            day         date NOT NULL,
            ip_hash     text NOT NULL DEFAULT '',
            device_hash text NOT NULL DEFAULT '',
            source      text NOT NULL CHECK (source IN ('enrollment', 'portal')),
            seen_at     timestamptz NOT NULL,
            UNIQUE (advocate_id, day, ip_hash, device_hash)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE advocate_sightings")

"""copies of programs' segments and of advocates' attribute changes (from link.events), so a
rule's variants are picked on the attributes in force when the conversion happened; the segment
whose variant decided a reward

Revision ID: 0007
"""

from alembic import op

revision = "0007"
# 0006 is taken by work merged beside this one: the lead re-chains this on merge.
down_revision = "0006"


def upgrade() -> None:
    op.execute(
        """
        -- program.audience_changed, whole; an older version arriving late changes nothing.
        CREATE TABLE program_segments (
            tenant_id   text NOT NULL,
            program_id  text NOT NULL,
            segments    jsonb NOT NULL,
            version     integer NOT NULL,
            PRIMARY KEY (tenant_id, program_id)
        );

        -- advocate.attributes_changed, each kept: the attributes at a time are folded from
        -- them by effective time (servicekit.audience.state_at), as link-service does.
        CREATE TABLE advocate_attribute_changes (
            tenant_id     text NOT NULL,
            advocate_id   text NOT NULL,
            change        integer NOT NULL,
            program_id    text NOT NULL,
            effective_at  timestamptz NOT NULL,
            changes       jsonb NOT NULL,
            PRIMARY KEY (tenant_id, advocate_id, change)
        );

        ALTER TABLE rewards ADD COLUMN segment text;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE rewards DROP COLUMN segment;
        DROP TABLE advocate_attribute_changes;
        DROP TABLE program_segments;
        """
    )

"""advocate attributes (current state and every change with its effective time), and each
program's audience: custom attribute definitions, segments, eligibility

Revision ID: 0007
"""

from alembic import op

revision = "0007"
# 0006 is taken by work merged beside this one: the lead re-chains this on merge.
down_revision = "0006"


def upgrade() -> None:
    op.execute(
        """
        -- A program's custom attributes (name -> type), segments (name, condition) and
        -- eligibility, as servicekit.audience checks them; a program without a row has only
        -- the built-in attributes, no segments and no eligibility rules.
        CREATE TABLE program_audiences (
            program_id   text PRIMARY KEY REFERENCES programs (id),
            tenant_id    text NOT NULL,
            attributes   jsonb NOT NULL DEFAULT '{}',
            segments     jsonb NOT NULL DEFAULT '[]',
            eligibility  jsonb NOT NULL DEFAULT '{}',
            version      integer NOT NULL DEFAULT 1,
            updated_at   timestamptz NOT NULL DEFAULT now()
        );

        -- The attributes in force now (every change folded by effective time), for reads and
        -- segment previews; the changes themselves are the history the events carry.
        ALTER TABLE advocates ADD COLUMN attributes jsonb NOT NULL DEFAULT '{}';
        ALTER TABLE advocates ADD COLUMN attribute_changes integer NOT NULL DEFAULT 0;

        CREATE TABLE advocate_attribute_changes (
            advocate_id   text NOT NULL REFERENCES advocates (id),
            change        integer NOT NULL,
            tenant_id     text NOT NULL,
            effective_at  timestamptz NOT NULL,
            changes       jsonb NOT NULL,
            recorded_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (advocate_id, change)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE advocate_attribute_changes;
        ALTER TABLE advocates DROP COLUMN attribute_changes;
        ALTER TABLE advocates DROP COLUMN attributes;
        DROP TABLE program_audiences;
        """
    )

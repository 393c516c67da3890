"""the country a conversion names (ISO 3166-1 alpha-2, optional), and the copy of each program's
friends' country rule (from link-service's program.audience_changed)

Revision ID: 0010
"""

from alembic import op

revision = "0010"
# 0009 is taken by work merged beside this one: the lead re-chains this on merge.
down_revision = "0009"


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE conversions ADD COLUMN country text;
        -- {countries_allow, countries_deny}; NULL: no rule. Read with the program's screening
        -- facts (to_jsonb of the row), so the decision needs no other read.
        ALTER TABLE programs ADD COLUMN friend_countries jsonb;
        ALTER TABLE programs ADD COLUMN audience_version integer NOT NULL DEFAULT 0;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE programs DROP COLUMN audience_version;
        ALTER TABLE programs DROP COLUMN friend_countries;
        ALTER TABLE conversions DROP COLUMN country;
        """
    )

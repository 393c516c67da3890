"""click retention (issue 19): clicks past CLICK_RETENTION_DAYS are rolled into click_days (what
the advocate portal and the share reminders read of them) and deleted

Revision ID: 0009
"""

from alembic import op

revision = "0009"
# Numbers 0006-0008 are taken by work merged beside this one: the lead re-chains this on merge.
down_revision = "0008"


def upgrade() -> None:
    op.execute(
        """
        -- Per advocate and UTC day: the clicks deleted by retention, counted as the portal
        -- counts them (human; human and `counts`) and bots apart. Holds no personal data.
        CREATE TABLE click_days (
            advocate_id text NOT NULL,
            day         date NOT NULL,
            tenant_id   text NOT NULL,
            program_id  text NOT NULL,
            human       integer NOT NULL DEFAULT 0,
            counted     integer NOT NULL DEFAULT 0,
            bots        integer NOT NULL DEFAULT 0,
            PRIMARY KEY (advocate_id, day)
        );
        -- The pruner's read (clicked_at < cutoff). BRIN: clicks arrive in time order, so a
        -- few pages cover the table and the redirect's inserts pay almost nothing for it.
        CREATE INDEX clicks_clicked_at_brin ON clicks USING brin (clicked_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP INDEX clicks_clicked_at_brin; DROP TABLE click_days")

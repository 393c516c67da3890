"""click retention (issue 19): the pruner's read of old clicks

Revision ID: 0012
"""

from alembic import op

revision = "0012"
# Numbers 0009-0011 are taken by work merged beside this one: the lead re-chains this on merge.
down_revision = "0011"


def upgrade() -> None:
    # The pruner's read (clicked_at < cutoff). BRIN: clicks arrive in about time order, so a
    # few pages cover the table and the click intake's inserts pay almost nothing for it.
    op.execute("CREATE INDEX clicks_clicked_at_brin ON clicks USING brin (clicked_at)")


def downgrade() -> None:
    op.execute("DROP INDEX clicks_clicked_at_brin")

"""the outbox's published rows found by age through a BRIN index (referral_events.sql.
OUTBOX_BY_PUBLISHED_V3): the relay's retention prune read the whole outbox every 10 minutes

Revision ID: 0013
"""

from alembic import op

from referral_events.sql import DROP_OUTBOX_BY_PUBLISHED_V3, OUTBOX_BY_PUBLISHED_V3

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    op.execute(OUTBOX_BY_PUBLISHED_V3)


def downgrade() -> None:
    op.execute(DROP_OUTBOX_BY_PUBLISHED_V3)

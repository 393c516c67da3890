"""personal data requests (issue 19): the tombstones of erased people, which every consumer
checks before it writes (referral_events.privacy)

Revision ID: 0008
"""

from alembic import op

from referral_events.privacy import DROP_TOMBSTONES_SQL_V1, TOMBSTONES_SQL_V1

revision = "0008"
# Other work adds revisions to this service beside this one: the lead re-chains this on merge.
down_revision = "0006"


def upgrade() -> None:
    op.execute(TOMBSTONES_SQL_V1)


def downgrade() -> None:
    op.execute(DROP_TOMBSTONES_SQL_V1)

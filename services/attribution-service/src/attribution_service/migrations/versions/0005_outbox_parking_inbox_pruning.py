"""outbox: attempts, last error and parking of rows the broker keeps refusing; inbox: a BRIN
index on processed_at for pruning by age (referral_events.sql.OUTBOX_INBOX_V2)

Revision ID: 0005
"""

from alembic import op

from referral_events.sql import DROP_OUTBOX_INBOX_V2, OUTBOX_INBOX_V2

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.execute(OUTBOX_INBOX_V2)


def downgrade() -> None:
    op.execute(DROP_OUTBOX_INBOX_V2)

"""webhook_receipts by arrival: the pending sweeper prunes receipts past their retention every
15 s (commerce.repository.prune_receipts), which read all seven days of them without it

Revision ID: 0018
"""

from alembic import op

revision = "0018"
down_revision = "0017"


def upgrade() -> None:
    op.execute("CREATE INDEX webhook_receipts_received ON webhook_receipts (received_at)")


def downgrade() -> None:
    op.execute("DROP INDEX webhook_receipts_received")

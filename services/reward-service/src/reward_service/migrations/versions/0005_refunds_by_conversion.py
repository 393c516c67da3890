"""refunds: an index by conversion, for earning's look-up of the refunds recorded before a
conversion's reward existed (every rewarded conversion asks; without it the look-up read the
tenant's whole refund history)

Revision ID: 0005
"""

from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.execute("CREATE INDEX refunds_by_conversion ON refunds (tenant_id, conversion_id)")


def downgrade() -> None:
    op.execute("DROP INDEX refunds_by_conversion")

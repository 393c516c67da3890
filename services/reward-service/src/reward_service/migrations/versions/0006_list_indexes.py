"""indexes for the cursor-paginated lists, each in its keyset order (created_at, id): rewards by
workspace, program and advocate (by holder: rewards_holder; by conversion: rewards_conversion),
redemptions by workspace and holder, payout batches, coupon pools by program

Revision ID: 0006
"""

from alembic import op

revision = "0006"
# Written beside other work on this service: the lead re-chains it on merge.
down_revision = "0005"

_INDEXES = {
    "rewards_tenant_page": "rewards (tenant_id, created_at, id)",
    "rewards_program_page": "rewards (program_id, created_at, id)",
    "rewards_advocate_page": "rewards (advocate_id, created_at, id)",
    "redemptions_tenant_page": "redemptions (tenant_id, created_at, id)",
    "redemptions_holder_page": "redemptions (tenant_id, holder_id, created_at, id)",
    "payout_batches_page": "payout_batches (tenant_id, created_at, id)",
    "coupon_pools_program_page": "coupon_pools (program_id, created_at, id)",
}


def upgrade() -> None:
    op.execute("".join(f"CREATE INDEX {name} ON {on};\n" for name, on in _INDEXES.items()))


def downgrade() -> None:
    op.execute("".join(f"DROP INDEX {name};\n" for name in reversed(_INDEXES)))

"""indexes for the cursor-paginated lists, each in its keyset order (created_at, id): conversions
in that order and by program (by advocate, customer and order id the existing indexes serve: an
advocate's or a customer's conversions are few), referrals in that order, by program and advocate,
reviews by state, refunds by conversion, integrations, experiments by program

Revision ID: 0009
"""

from alembic import op

revision = "0009"
# Written beside other work on this service: the lead re-chains it on merge.
down_revision = "0008"

_INDEXES = {
    # conversions is the hot path's table: two indexes more per insert, no more. Neither is
    # led by tenant_id: a plan the group commit makes on empty tables would take such an index
    # for its per-customer reads and scan the tenant's history (test_batch_plans); a
    # workspace-wide page walks (created_at, id) and filters the tenant.
    "conversions_page": "conversions (created_at, id)",
    "conversions_program_page": "conversions (program_id, created_at, id)",
    "referrals_page": "referrals (created_at, id)",
    "referrals_program_page": "referrals (program_id, created_at, id)",
    "referrals_advocate_page": "referrals (advocate_id, created_at, id)",
    "reviews_status_page": "reviews (tenant_id, status, created_at, id)",
    "reviews_tenant_page": "reviews (tenant_id, created_at, id)",
    "refunds_conversion_page": "refunds (conversion_id, created_at, id)",
    "integrations_tenant_page": "integrations (tenant_id, created_at, id)",
    "experiments_program_page": "experiments (program_id, created_at, id)",
}


def upgrade() -> None:
    op.execute("".join(f"CREATE INDEX {name} ON {on};\n" for name, on in _INDEXES.items()))


def downgrade() -> None:
    op.execute("".join(f"DROP INDEX {name};\n" for name in reversed(_INDEXES)))

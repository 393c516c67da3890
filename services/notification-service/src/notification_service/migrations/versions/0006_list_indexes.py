"""indexes for the cursor-paginated lists, each in its keyset order: webhook endpoints
(created_at, id), the email log newest first (created_at, id), suppressions by (created_at,
md5(address)) so a cursor carries no address; the delivery log has webhook_deliveries_log

Revision ID: 0006
"""

from alembic import op

revision = "0006"
# Written beside other work on this service: the lead re-chains it on merge.
down_revision = "0005"

_INDEXES = {
    "webhook_endpoints_page": "webhook_endpoints (tenant_id, created_at, id)",
    "emails_page": "emails (tenant_id, created_at, id)",
    "email_suppressions_page": "email_suppressions (tenant_id, created_at, md5(address))",
}


def upgrade() -> None:
    op.execute("".join(f"CREATE INDEX {name} ON {on};\n" for name, on in _INDEXES.items()))


def downgrade() -> None:
    op.execute("".join(f"DROP INDEX {name};\n" for name in reversed(_INDEXES)))

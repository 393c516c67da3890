"""indexes for the cursor-paginated lists: advocates by workspace, by program and by customer
id in keyset order (created_at, id); the audit log in its keyset order (at, seq); workspaces

Revision ID: 0006
"""

from alembic import op

revision = "0006"
# Written beside other work on this service: the lead re-chains it on merge.
down_revision = "0005"


def upgrade() -> None:
    op.execute(
        """
        -- GET /v1/advocates and /v1/programs/{id}/advocates read pages in (created_at, id)
        -- order; the customer-id lookup across programs reads (tenant_id, customer_id).
        CREATE INDEX advocates_tenant_page ON advocates (tenant_id, created_at, id);
        CREATE INDEX advocates_program_page ON advocates (program_id, created_at, id);
        CREATE INDEX advocates_customer ON advocates (tenant_id, customer_id);
        -- The audit log pages in (at, seq); the index on seq alone stays for the old release.
        CREATE INDEX audit_log_by_time ON audit_log (workspace_id, at, seq);
        CREATE INDEX workspaces_page ON workspaces (created_at, id);
        CREATE INDEX programs_page ON programs (tenant_id, created_at, id);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX programs_page;
        DROP INDEX workspaces_page;
        DROP INDEX audit_log_by_time;
        DROP INDEX advocates_customer;
        DROP INDEX advocates_program_page;
        DROP INDEX advocates_tenant_page;
        """
    )

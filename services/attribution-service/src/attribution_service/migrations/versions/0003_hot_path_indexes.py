"""indexes for the reads every conversion makes: the tenant's program settings, and awaited
evidence that never arrived by the value a conversion names (any tenant's: a foreign one refuses
the conversion too)

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.execute(
        """
        CREATE INDEX program_settings_tenant ON program_settings (tenant_id);
        CREATE INDEX expired_evidence_value ON expired_evidence (value, kind);
        """
    )


def downgrade() -> None:
    op.execute("DROP INDEX program_settings_tenant, expired_evidence_value")

"""dev_clock_moves: who moved a dev stack's clock, by how much, and what it released (the
audit of POST /v1/dev/clock/advance; a table no production run writes)

Revision ID: 0011 (numbered for issue 17; the lead re-chains down_revision on merge)
"""

from alembic import op

from servicekit import rls

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE dev_clock_moves (
            seq            bigserial PRIMARY KEY,
            tenant_id      text NOT NULL,
            key_id         text NOT NULL,
            advance_ms     bigint NOT NULL CHECK (advance_ms > 0),
            -- the clock's offset from real time after the move
            offset_ms      bigint NOT NULL,
            released       integer NOT NULL,
            -- real time, not the moved clock's
            moved_at       timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        """
    )

    # its new tenant table gets the tenant policy (servicekit.rls)
    op.execute(rls.ENABLE)


def downgrade() -> None:
    op.execute("DROP TABLE dev_clock_moves")

"""webhook deliveries: pending ones indexed by endpoint, for the dispatcher's claim

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.execute(
        """
        -- The claim walks the endpoints that have pending deliveries (one index descent each)
        -- and takes each one's oldest due deliveries, up to its free slots, from this index:
        -- its cost follows the endpoints and the slots, not the size of the backlog, and its
        -- plan does not depend on statistics (a backlog queued faster than autovacuum analyses
        -- made the old whole-backlog ranking quadratic). It replaces the index on
        -- next_attempt_at alone, which nothing else reads: one index less to write on every
        -- claim and every record.
        CREATE INDEX webhook_deliveries_pending ON webhook_deliveries
            (endpoint_id, next_attempt_at, id) WHERE status = 'pending';
        DROP INDEX webhook_deliveries_due;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
            WHERE status = 'pending';
        DROP INDEX webhook_deliveries_pending;
        """
    )

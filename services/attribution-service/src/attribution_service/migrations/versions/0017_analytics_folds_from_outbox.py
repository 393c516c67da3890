"""analytics folds this service's own events from the outbox itself, in commit order, instead of
from a copy of each event written beside it (analytics_emitted): every outbox row carries the id
of the transaction that wrote it, and a one-row cursor says how far the folds have read

Revision ID: 0017
"""

from alembic import op

revision = "0017"
# Re-pointed by the lead at whatever is the head when the work of this turn is merged.
down_revision = "0014"


def upgrade() -> None:
    op.execute(
        """
        -- The writing transaction's id: rows of transactions older than every running one
        -- (pg_snapshot_xmin) can no longer be joined by a row that commits later, so reading
        -- past them in (xid, seq) order misses nothing, whatever the order of commits.
        ALTER TABLE outbox ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
        CREATE INDEX outbox_by_xid ON outbox (xid, seq);

        -- How far analytics has folded this service's own events. Rows already in the outbox
        -- now were deferred into analytics_emitted when written: start after them.
        CREATE TABLE analytics_fold_cursor (
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            xid      xid8 NOT NULL,
            seq      bigint NOT NULL
        );
        INSERT INTO analytics_fold_cursor (xid, seq)
        SELECT pg_current_xact_id(), coalesce(max(seq), 0) FROM outbox;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE analytics_fold_cursor;
        DROP INDEX outbox_by_xid;
        ALTER TABLE outbox DROP COLUMN xid;
        """
    )

"""body retention (issue 19): mail and webhook bodies past their retention are cleared by the
pruner (the rows stay: the delivery log, and the unique keys that stop a redelivered cause from
mailing or posting twice)

Revision ID: 0009
"""

from alembic import op

revision = "0009"
# Numbers 0006-0008 are taken by work merged beside this one: the lead re-chains this on merge.
down_revision = "0008"


def upgrade() -> None:
    op.execute(
        """
        -- NULL: cleared by retention (a message whose deliveries are all settled).
        ALTER TABLE webhook_messages ALTER COLUMN body DROP NOT NULL;
        -- The pruner's reads (created_at < cutoff). BRIN: rows arrive in time order, so a few
        -- pages cover each table and inserts pay almost nothing for it.
        CREATE INDEX webhook_messages_created_brin ON webhook_messages USING brin (created_at);
        CREATE INDEX emails_created_brin ON emails USING brin (created_at);
        -- A message's deliveries (the pruner skips messages with one still pending).
        CREATE INDEX webhook_deliveries_message ON webhook_deliveries (message_id);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX webhook_deliveries_message, emails_created_brin, webhook_messages_created_brin;
        UPDATE webhook_messages SET body = '' WHERE body IS NULL;
        ALTER TABLE webhook_messages ALTER COLUMN body SET NOT NULL;
        """
    )

"""api_keys: this service's copy of link-service's workspace API keys, fed by link.events
(referral_events.sql.API_KEYS_COPY_V1; servicekit.keys)

Revision ID: 0006
"""

from alembic import op

from referral_events.sql import API_KEYS_COPY_V1, DROP_API_KEYS_COPY_V1

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.execute(API_KEYS_COPY_V1)


def downgrade() -> None:
    op.execute(DROP_API_KEYS_COPY_V1)

"""portal_rewards by conversion: a conversion.attributed event settles its referral's
"rewarded" flag from the rewards of that conversion (portal.repository.settle_rewarded), which
read every reward of every advocate without it

Revision ID: 0012
"""

from alembic import op

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    op.execute("CREATE INDEX portal_rewards_conversion ON portal_rewards (conversion_id)")


def downgrade() -> None:
    op.execute("DROP INDEX portal_rewards_conversion")

"""conversions and referrals: every secondary index led by the column its lookups name

Revision ID: 0004
"""

from alembic import op

revision = "0004"
down_revision = "0003"

# (name, new columns, old columns, predicate, unique) for the indexes that led with tenant_id.
_INDEXES = (
    (
        "conversions_idempotency",
        "idempotency_key, tenant_id",
        "tenant_id, idempotency_key",
        "WHERE idempotency_key IS NOT NULL",
        True,
    ),
    (
        "conversions_order",
        "order_id, tenant_id, type",
        "tenant_id, type, order_id",
        "WHERE order_id IS NOT NULL",
        True,
    ),
    ("conversions_order_any", "order_id, tenant_id", "tenant_id, order_id", "", False),
    (
        "conversions_customer",
        "customer_id, tenant_id, occurred_at",
        "tenant_id, customer_id, occurred_at",
        "",
        False,
    ),
    (
        "conversions_ip",
        "ip_hash, tenant_id, occurred_at",
        "tenant_id, ip_hash, occurred_at",
        "WHERE ip_hash IS NOT NULL",
        False,
    ),
    (
        "conversions_device",
        "device_hash, tenant_id, occurred_at",
        "tenant_id, device_hash, occurred_at",
        "WHERE device_hash IS NOT NULL",
        False,
    ),
    (
        "conversions_subscription",
        "subscription_id, tenant_id",
        "tenant_id, subscription_id",
        "WHERE subscription_id IS NOT NULL",
        False,
    ),
    (
        "referrals_friend",
        "friend_customer_id, tenant_id, created_at",
        "tenant_id, friend_customer_id, created_at",
        "",
        False,
    ),
)


def _swap(columns_at: int) -> str:
    """Build each index with the other column order beside the old one, then replace it."""
    out = []
    for name, *cols, where, unique in _INDEXES:
        table = name.split("_", 1)[0]
        out.append(
            f"CREATE {'UNIQUE ' if unique else ''}INDEX {name}_new ON {table}"
            f" ({cols[columns_at]}) {where};"
            f" DROP INDEX {name}; ALTER INDEX {name}_new RENAME TO {name};"
        )
    return "\n".join(out)


def upgrade() -> None:
    # The group commit plans its statements once per connection
    # (repository.BATCH_PLAN_SETTINGS), and that may be while the tables are young, when
    # Postgres's estimates tell indexes apart by little more than chance. Led by tenant_id, any
    # of these indexes could serve any lookup of a tenant's rows, and a plan made on young
    # tables did read a conversion's idempotency key through the customer index (and the
    # advocate's sightings through the order index): every conversion of the tenant, per
    # conversion decided. Led by the column a lookup names (a key, an order, a customer, a
    # hash), an index is only usable by the lookups it is for, whatever the statistics say;
    # tenant_id stays in each, so no tenant reads another's rows.
    op.execute(_swap(0))
    # The friend's referrals: looked up by (tenant, friend), unique per (tenant, program,
    # friend). The constraint led by tenant_id becomes a unique index led by the friend.
    op.execute(
        """
        CREATE UNIQUE INDEX referrals_friend_program
            ON referrals (friend_customer_id, program_id, tenant_id);
        ALTER TABLE referrals DROP CONSTRAINT referrals_tenant_id_program_id_friend_customer_id_key;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE referrals ADD CONSTRAINT referrals_tenant_id_program_id_friend_customer_id_key
            UNIQUE (tenant_id, program_id, friend_customer_id);
        DROP INDEX referrals_friend_program;
        """
    )
    op.execute(_swap(1))

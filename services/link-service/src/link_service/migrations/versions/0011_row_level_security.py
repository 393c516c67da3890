"""row-level security (FORCE) on every tenant table: the second wall behind the queries' own
tenant scoping (servicekit.rls; the services act as its role, which cannot bypass it)

It covers the tenant tables that exist when it runs: a later revision that adds one runs
`rls.ENABLE` again (later revisions that only add indexes need not).

Revision ID: 0011
"""

from alembic import op

from servicekit import rls

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.execute(rls.ENABLE)


def downgrade() -> None:
    op.execute(rls.DISABLE)

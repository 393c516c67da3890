"""programs and advocates this service has heard of (from link.events), so a read under an
unknown program or holder answers 404 and a write under a program not heard of yet 409 (issue 17);
backfilled from what the service already holds: rules, rewards, coupon pools, segments, attribute
changes. Ids only: nothing personal.

Revision ID: 0012 (numbered for issue 17; the lead re-chains down_revision on merge)
"""

from alembic import op

from servicekit import rls

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE programs (
            tenant_id   text NOT NULL,
            program_id  text NOT NULL,
            learnt_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, program_id)
        );

        CREATE TABLE advocates (
            tenant_id    text NOT NULL,
            advocate_id  text NOT NULL,
            program_id   text NOT NULL,
            learnt_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, advocate_id)
        );

        -- Every program and advocate the service already acted on existed upstream (a rule
        -- was written for it before this revision accepted any program; a reward or an
        -- attribute change came from link-service's or attribution-service's events).
        INSERT INTO programs (tenant_id, program_id)
            SELECT tenant_id, program_id FROM rule_versions
            UNION SELECT tenant_id, program_id FROM rewards
            UNION SELECT tenant_id, program_id FROM coupon_pools
            UNION SELECT tenant_id, program_id FROM program_segments
            UNION SELECT tenant_id, program_id FROM advocate_attribute_changes
        ON CONFLICT DO NOTHING;
        INSERT INTO advocates (tenant_id, advocate_id, program_id)
            SELECT DISTINCT ON (tenant_id, advocate_id) tenant_id, advocate_id, program_id
            FROM (
                SELECT tenant_id, advocate_id, program_id FROM rewards
                UNION SELECT tenant_id, advocate_id, program_id FROM advocate_attribute_changes
            ) seen
        ON CONFLICT DO NOTHING;
        """
    )

    # its new tenant tables get the tenant policy (servicekit.rls)
    op.execute(rls.ENABLE)


def downgrade() -> None:
    op.execute("DROP TABLE advocates; DROP TABLE programs;")

"""rule_promotions: each experiment winner promoted to a program's reward rule (attribution's
reward_rule.promoted.v1), with what it did: the rule version it wrote, none when the rule was
already the same, or why the variant's config was refused. One per experiment (the domain key
under a redelivery with a new event id); append-only, the audit beside rule_versions.

Revision ID: 0013 (numbered for issue 22; the lead re-chains down_revision on merge)
"""

from alembic import op

from servicekit import rls

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE rule_promotions (
            tenant_id       text NOT NULL,
            experiment_id   text NOT NULL,
            program_id      text NOT NULL,
            variant         text NOT NULL,
            event_id        text NOT NULL,
            forced          boolean NOT NULL,
            outcome         text NOT NULL CHECK (outcome IN ('applied', 'unchanged', 'refused')),
            -- the version in force after it (applied: the one it wrote); null when refused
            rule_version_id text REFERENCES rule_versions (id),
            -- refused: the problem with the config, and the field it names
            detail          text,
            field           text,
            promoted_at     timestamptz NOT NULL,
            recorded_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, experiment_id)
        );
        CREATE INDEX rule_promotions_by_version ON rule_promotions (rule_version_id);
        CREATE TRIGGER rule_promotions_append_only BEFORE UPDATE OR DELETE ON rule_promotions
            FOR EACH ROW EXECUTE FUNCTION forbid_change();
        """
    )

    # its new tenant table gets the tenant policy (servicekit.rls)
    op.execute(rls.ENABLE)


def downgrade() -> None:
    op.execute("DROP TABLE rule_promotions")

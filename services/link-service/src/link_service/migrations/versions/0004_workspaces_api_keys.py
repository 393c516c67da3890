"""workspaces, their API keys (the key table every service copies from link.events) and the
audit log of key and workspace changes

Revision ID: 0004
"""

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE workspaces (
            id         text PRIMARY KEY,
            name       text NOT NULL,
            plan       text NOT NULL,
            created_by text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );

        -- The columns of referral_events.sql.API_KEYS_COPY_V1 (what servicekit.keys.KeyStore
        -- reads), and what only the owner keeps: name, display prefix, times, creator.
        CREATE TABLE api_keys (
            key_hash     text PRIMARY KEY,
            id           text NOT NULL UNIQUE,
            workspace_id text NOT NULL,
            scopes       text[] NOT NULL,
            plan         text NOT NULL,
            expires_at   timestamptz,
            revoked_at   timestamptz,
            version      integer NOT NULL DEFAULT 1,
            name         text NOT NULL,
            prefix       text NOT NULL,
            created_by   text NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now(),
            updated_at   timestamptz NOT NULL DEFAULT now(),
            last_used_at timestamptz
        );
        CREATE INDEX api_keys_by_workspace ON api_keys (workspace_id, created_at, id);

        CREATE TABLE audit_log (
            seq          bigserial PRIMARY KEY,
            workspace_id text NOT NULL,
            actor_key_id text NOT NULL,
            action       text NOT NULL,
            target_id    text,
            details      jsonb NOT NULL DEFAULT '{}'::jsonb,
            at           timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX audit_log_by_workspace ON audit_log (workspace_id, seq);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE audit_log; DROP TABLE api_keys; DROP TABLE workspaces;")

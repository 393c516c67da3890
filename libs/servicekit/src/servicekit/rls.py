"""Row-level security on every tenant table of a schema, written once and applied by one
revision in each service (link 0011, attribution 0014, reward 0010, notification 0010).

Every table of the schema with a `tenant_id` column gets RLS enabled and FORCEd (the owner is
held to it too) and one policy: a row is seen, and may be written, only when its tenant is the
connection's `app.tenant_id`, or that setting is "*" (every tenant: the path of work that
legitimately spans them, servicekit.db). No setting: no rows. The services connect acting as
`APP_ROLE` (the DATABASE_ROLE setting), which owns nothing and cannot bypass RLS; migrations run
as the login role, the owner. Tables keyed by workspace instead (workspaces, API keys and their
copies, the audit log) are platform tables read across tenants by authentication and platform
admins: their queries' own scoping is their only wall ([security](../../../../docs/security.md)).
A table added later gets the same by running `ENABLE` again in its revision
(`tests/attack/test_row_level_security.py` fails on a tenant table without it)."""

from __future__ import annotations

APP_ROLE = "referral_app"

# The policy's predicate: the connection's tenant, or every tenant.
PREDICATE = (
    "current_setting('app.tenant_id', true) = '*'"
    " OR tenant_id = current_setting('app.tenant_id', true)"
)


def ensure_role(role: str) -> str:
    """PL/pgSQL statements that make `role` if it is missing and let the login act as it (SET
    ROLE). The services' migrations may run at once on a fresh database, and the role is the
    cluster's, not a schema's: both find it missing, and the second CREATE (or GRANT) fails on
    the catalogue's unique index once the first commits. The loser's work is done by then, so
    that failure is taken as success."""
    return f"""
    BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
            CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS;
        END IF;
    EXCEPTION WHEN unique_violation OR duplicate_object THEN
        NULL;
    END;
    BEGIN
        IF NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN
            EXECUTE format('GRANT {role} TO %I', current_user);
        END IF;
    EXCEPTION WHEN unique_violation OR duplicate_object THEN
        NULL;
    END;"""


ENABLE = f"""
DO $rls$
DECLARE
    t record;
    predicate text := $p${PREDICATE}$p$;
BEGIN
{ensure_role(APP_ROLE)}
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {APP_ROLE}', current_schema());
    EXECUTE format(
        'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO {APP_ROLE}',
        current_schema());
    EXECUTE format(
        'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO {APP_ROLE}',
        current_schema());
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I '
        'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_ROLE}', current_schema());
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I '
        'GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {APP_ROLE}', current_schema());
    FOR t IN
        SELECT c.relname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a
          ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
          AND NOT EXISTS (
              SELECT FROM pg_policy p
              WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation')
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t.relname);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t.relname);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (%s) WITH CHECK (%s)',
            t.relname, predicate, predicate);
    END LOOP;
END
$rls$;
"""  # noqa: S608 (built from this module's constants only)

DISABLE = """
DO $rls$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.relname
        FROM pg_policy p
        JOIN pg_class c ON c.oid = p.polrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND p.polname = 'tenant_isolation'
    LOOP
        EXECUTE format('DROP POLICY tenant_isolation ON %I', t.relname);
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', t.relname);
        EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', t.relname);
    END LOOP;
END
$rls$;
"""

"""program settings, advocate block state and versions, code aliases, click inactive reason,
bulk enrollment jobs

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE programs
            ADD COLUMN starts_at       timestamptz,
            ADD COLUMN ends_at         timestamptz,
            ADD COLUMN fallback_url    text,
            ADD COLUMN default_locale  text NOT NULL DEFAULT 'en',
            ADD COLUMN code_length     integer NOT NULL DEFAULT 8,
            ADD COLUMN code_alphabet   text NOT NULL DEFAULT '23456789ABCDEFGHJKMNPQRSTUVWXYZ',
            ADD COLUMN code_prefix     text NOT NULL DEFAULT '',
            ADD COLUMN vanity_allowed  boolean NOT NULL DEFAULT false,
            ADD COLUMN share_templates jsonb NOT NULL DEFAULT '{}'::jsonb,
            ADD COLUMN version         integer NOT NULL DEFAULT 1,
            ADD CONSTRAINT programs_window CHECK (ends_at IS NULL OR starts_at IS NULL
                                                  OR ends_at > starts_at);

        ALTER TABLE advocates
            ADD COLUMN blocked_at   timestamptz,
            ADD COLUMN block_reason text,
            ADD COLUMN updated_at   timestamptz NOT NULL DEFAULT now(),
            ADD COLUMN version      integer NOT NULL DEFAULT 1;

        -- An advocate has one current code; earlier ones stay as aliases that keep redirecting.
        ALTER TABLE codes
            ADD COLUMN current     boolean NOT NULL DEFAULT true,
            ADD COLUMN replaced_at timestamptz;
        CREATE UNIQUE INDEX codes_one_current ON codes (advocate_id) WHERE current;

        ALTER TABLE clicks ADD COLUMN inactive_reason text;

        -- Bulk enrollment: the uploaded rows are the job's durable state, so a restarted worker
        -- resumes where the last committed chunk ended.
        CREATE TABLE enrollment_jobs (
            id            text PRIMARY KEY,
            tenant_id     text NOT NULL,
            program_id    text NOT NULL REFERENCES programs (id),
            format        text NOT NULL CHECK (format IN ('csv', 'ndjson')),
            file_sha256   text NOT NULL,
            status        text NOT NULL DEFAULT 'queued'
                          CHECK (status IN ('queued', 'running', 'done')),
            total_rows    integer NOT NULL,
            done_rows     integer NOT NULL DEFAULT 0,
            enrolled      integer NOT NULL DEFAULT 0,
            existing      integer NOT NULL DEFAULT 0,
            failed        integer NOT NULL DEFAULT 0,
            created_at    timestamptz NOT NULL DEFAULT now(),
            started_at    timestamptz,
            finished_at   timestamptz
        );
        CREATE INDEX enrollment_jobs_open ON enrollment_jobs (created_at)
            WHERE status <> 'done';
        CREATE INDEX enrollment_jobs_tenant ON enrollment_jobs (tenant_id, created_at);

        -- data holds the uploaded row as JSON until it is processed (personal data: email, name).
        CREATE TABLE enrollment_job_rows (
            job_id      text NOT NULL REFERENCES enrollment_jobs (id) ON DELETE CASCADE,
            row_no      integer NOT NULL,
            line_no     integer NOT NULL,
            data        text,
            status      text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'enrolled', 'existing', 'error')),
            error       text,
            field       text,
            advocate_id text,
            PRIMARY KEY (job_id, row_no)
        );
        CREATE INDEX enrollment_job_rows_pending ON enrollment_job_rows (job_id, row_no)
            WHERE status = 'pending';
        CREATE INDEX enrollment_job_rows_errors ON enrollment_job_rows (job_id, row_no)
            WHERE status = 'error';
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE enrollment_job_rows, enrollment_jobs;
        ALTER TABLE clicks DROP COLUMN inactive_reason;
        DROP INDEX codes_one_current;
        ALTER TABLE codes DROP COLUMN current, DROP COLUMN replaced_at;
        ALTER TABLE advocates DROP COLUMN blocked_at, DROP COLUMN block_reason,
            DROP COLUMN updated_at, DROP COLUMN version;
        ALTER TABLE programs DROP CONSTRAINT programs_window, DROP COLUMN starts_at,
            DROP COLUMN ends_at, DROP COLUMN fallback_url, DROP COLUMN default_locale,
            DROP COLUMN code_length, DROP COLUMN code_alphabet, DROP COLUMN code_prefix,
            DROP COLUMN vanity_allowed, DROP COLUMN share_templates, DROP COLUMN version;
        """
    )

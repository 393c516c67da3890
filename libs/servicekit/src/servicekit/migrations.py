"""Alembic, driven from code: each service keeps its revisions in `<package>/migrations` and its
tables (and alembic's version table) in its own schema. Revisions are plain SQL (op.execute)."""

from __future__ import annotations

import zlib
from importlib.resources import files
from urllib.parse import urlsplit, urlunsplit

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool


def sqlalchemy_url(database_url: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def alembic_config(database_url: str, schema: str, package: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files(package) / "migrations"))
    cfg.attributes["schema"] = schema
    cfg.attributes["url"] = sqlalchemy_url(database_url)
    return cfg


def upgrade(database_url: str, schema: str, package: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url, schema, package), revision)


def downgrade(database_url: str, schema: str, package: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url, schema, package), revision)


def run_env() -> None:
    """Body of every service's migrations/env.py."""
    from alembic import context

    cfg = context.config
    schema: str = cfg.attributes["schema"]
    engine = create_engine(cfg.attributes["url"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Two replicas starting at once must not both migrate: serialise on an advisory lock.
        lock_id = zlib.crc32(f"migrate:{schema}".encode())
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({lock_id})")
        connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        connection.exec_driver_sql(f'SET search_path TO "{schema}"')
        # A revision that moves data acts on every tenant's rows (servicekit.rls: the owner is
        # held to the tables' row-level security too).
        connection.exec_driver_sql("SET app.tenant_id = '*'")
        connection.commit()
        context.configure(
            connection=connection,
            version_table_schema=schema,
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        connection.exec_driver_sql(f"SELECT pg_advisory_unlock({lock_id})")
        connection.commit()

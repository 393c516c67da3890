"""Postgres for local runs and tests: pgserver's embedded Postgres 16 unless DATABASE_URL names
one already running."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def start_embedded(data_dir: Path) -> tuple[Any, str]:
    """Start (or reuse) the embedded server; returns it (keep a reference) and its admin DSN."""
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
    return server, str(server.get_uri())


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def create_database(admin_dsn: str, name: str) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def create_scratch_database(admin_dsn: str) -> str:
    return await create_database(admin_dsn, f"t_{secrets.token_hex(6)}")

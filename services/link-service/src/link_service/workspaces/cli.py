"""`link-service keys create|list|revoke`: the API's key operations for ops, through the same
handlers on the service's database (the running service's outbox relay publishes the events).
The audit log names the actor `cli:<user>`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import ValidationError

from link_service.workspaces import handlers
from link_service.workspaces.schemas import ApiKeyIn
from servicekit.db import create_pool, transaction
from servicekit.problems import DomainError
from servicekit.runtime import Command
from servicekit.settings import ServiceSettings

SCHEMA = "link"


def _shown(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "scopes": list(row["scopes"]),
        "expires_at": row["expires_at"].isoformat() if row["expires_at"] else None,
        "revoked_at": row["revoked_at"].isoformat() if row["revoked_at"] else None,
    }


async def _run(args: argparse.Namespace, settings: ServiceSettings) -> int:
    actor = f"cli:{getpass.getuser()}"
    pool = await create_pool(
        settings.database_url,
        schema=SCHEMA,
        application_name="link-service-keys-cli",
        min_size=1,
        max_size=1,
        server_settings=settings.db_role_settings(),
        across_tenants=True,
    )
    try:
        async with transaction(pool) as conn:
            if args.action == "create":
                cmd = ApiKeyIn(
                    name=args.name,
                    scopes=args.scopes.split(","),
                    expires_at=args.expires_at,
                    test=args.test,
                )
                new = await handlers.create_key(conn, args.workspace, actor, cmd)
                print(json.dumps({**_shown(new.row), "key": new.secret}))
            elif args.action == "list":
                for row in await handlers.list_keys(conn, args.workspace):
                    print(json.dumps(_shown(row)))
            else:
                row = await handlers.revoke_key(conn, args.workspace, actor, args.key_id)
                print(json.dumps(_shown(row)))
    finally:
        await pool.close()
    return 0


def _keys(args: argparse.Namespace, settings: ServiceSettings) -> int:
    try:
        return asyncio.run(_run(args, settings))
    except DomainError as exc:
        print(f"link-service keys: {exc.detail} ({exc.field})", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"link-service keys: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "create, list and revoke a workspace's API keys"
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new key; its secret is printed once")
    create.add_argument("--workspace", required=True, help="workspace id (ws_…)")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated, e.g. programs:read")
    create.add_argument("--expires-at", type=datetime.fromisoformat, default=None)
    create.add_argument("--test", action="store_true", help="an rk_test_ key")
    listing = actions.add_parser("list", help="the workspace's keys (never their secrets)")
    listing.add_argument("--workspace", required=True)
    revoke = actions.add_parser("revoke", help="refused by every service within 2 s")
    revoke.add_argument("--workspace", required=True)
    revoke.add_argument("key_id")


KEYS = Command(
    name="keys",
    help="create, list and revoke API keys (as the API does)",
    run=_keys,
    arguments=_arguments,
)

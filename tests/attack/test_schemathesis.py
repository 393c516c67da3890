"""schemathesis against every service's OpenAPI document: the four services in this process on
real sockets (real Kafka and Postgres, as the integration tests run them), the `st` CLI
generating requests from the document each serves, the four runs at once. Checks: no 5xx, every
documented response matches its schema. A bounded number of examples per operation keeps the
run within CI's minute; ATTACK_MAX_EXAMPLES raises it on demand."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from devstack.paths import free_port
from devstack.pytest_plugin import Namespace
from devstack.testing import migrate, new_api_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

SCHEMAS = {
    "link-service": ("link", "link_service"),
    "attribution-service": ("attribution", "attribution_service"),
    "reward-service": ("reward", "reward_service"),
    "notification-service": ("notification", "notification_service"),
}
# Per operation and phase; the seed makes a failure reproducible (`st run ... --seed`).
MAX_EXAMPLES = int(os.environ.get("ATTACK_MAX_EXAMPLES", "8"))
# The coverage phase (every boundary of every field) takes minutes on a shared CI machine: on
# demand (ATTACK_PHASES=examples,coverage,fuzzing).
PHASES = os.environ.get("ATTACK_PHASES", "examples,fuzzing")
SEED = int(os.environ.get("ATTACK_SEED", "21"))


def _app(name: str, settings: dict[str, Any]) -> FastAPI:
    if name == "link-service":
        from link_service.config import Settings as LinkSettings
        from link_service.main import create_app as link_app

        return link_app(LinkSettings(**settings))
    if name == "attribution-service":
        from attribution_service.config import Settings as AttributionSettings
        from attribution_service.main import create_app as attribution_app

        return attribution_app(AttributionSettings(**settings))
    if name == "reward-service":
        from reward_service.config import Settings as RewardSettings
        from reward_service.main import create_app as reward_app

        # no program is ever created here: a write under one answers 409 at once, without
        # waiting for its event (PROGRAM_EVENT_WAIT_SECONDS)
        return reward_app(RewardSettings(**settings, program_event_wait_seconds=0))
    from notification_service.config import Settings as NotificationSettings
    from notification_service.main import create_app as notification_app

    return notification_app(NotificationSettings(**settings))


@asynccontextmanager
async def _serve(app: FastAPI) -> AsyncIterator[str]:
    """The app on a loopback socket in this event loop, its lifespan (pool, Kafka) run."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _schemathesis(url: str, key: str, report_dir: Path) -> tuple[int, str]:
    st = Path(sys.executable).with_name("st")
    proc = await asyncio.create_subprocess_exec(
        str(st),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--phases",
        PHASES,
        "--no-shrink",
        # One worker: Hypothesis parsing source in two threads at once trips CPython 3.11's
        # "AST constructor recursion depth mismatch" inside schemathesis.
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "-H",
        f"Authorization: Bearer {key}",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
        cwd=report_dir.parent,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    namespace: Namespace, tmp_path: Path
) -> None:
    key, entry = new_api_key("acme")
    settings = {**namespace.settings_env(), "api_keys": [entry]}
    for schema, package in SCHEMAS.values():
        await migrate(namespace.database_url, schema, package)
    async with AsyncExitStack() as stack:
        urls = {
            name: await stack.enter_async_context(_serve(_app(name, settings))) for name in SCHEMAS
        }
        runs = await asyncio.gather(
            *(_schemathesis(url, key, tmp_path / name) for name, url in urls.items())
        )
    failed = {name: out for name, (rc, out) in zip(urls, runs, strict=True) if rc != 0}
    assert not failed, "\n\n".join(f"== {name}\n{out[-15000:]}" for name, out in failed.items())

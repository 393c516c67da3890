from __future__ import annotations

from fastapi import FastAPI

from link_service import api
from link_service.config import Settings
from link_service.consumers import CONSUMERS
from servicekit.app import create_service_app
from servicekit.cli import run_cli
from servicekit.runtime import ServiceSpec

SPEC = ServiceSpec(name="link-service", schema="link", package="link_service", consumers=CONSUMERS)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings or Settings(), [api.router])


def main() -> None:
    run_cli(SPEC, Settings, create_app)


if __name__ == "__main__":
    main()

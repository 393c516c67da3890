from __future__ import annotations

from fastapi import FastAPI

from reward_service import api, domain
from reward_service.config import Settings
from reward_service.consumers import CONSUMERS
from reward_service.workers import RewardReleaser
from servicekit.app import create_service_app
from servicekit.cli import run_cli
from servicekit.runtime import Runtime, ServiceSpec, Worker


def build_spec(clock: domain.Clock = domain.utc_now) -> ServiceSpec:
    def workers(rt: Runtime) -> list[Worker]:
        s = rt.settings
        assert isinstance(s, Settings)
        return [
            RewardReleaser(
                rt,
                interval=s.release_poll_interval_seconds,
                batch_size=s.release_batch_size,
                clock=clock,
            )
        ]

    return ServiceSpec(
        name="reward-service",
        schema="reward",
        package="reward_service",
        consumers=CONSUMERS,
        workers=workers,
    )


SPEC = build_spec()


def create_app(settings: Settings | None = None, clock: domain.Clock = domain.utc_now) -> FastAPI:
    """`clock` is the one source of "now" for rule versions and releases."""
    app = create_service_app(build_spec(clock), settings or Settings(), [api.router])
    app.state.clock = clock
    return app


def main() -> None:
    run_cli(SPEC, Settings, create_app)


if __name__ == "__main__":
    main()

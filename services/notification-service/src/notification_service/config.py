from __future__ import annotations

from pydantic import Field

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    http_port: int = 8004
    # Production refuses plain http and private destinations (SSRF); tests and local runs
    # (devstack) turn these on to deliver to receivers on loopback.
    webhook_allow_http: bool = False
    webhook_allow_private_networks: bool = False
    # Whole attempt, connect to last byte read: a receiver that drips its answer is cut off too.
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    webhook_poll_interval_seconds: float = Field(default=1.0, gt=0)
    # Attempts in flight to one endpoint from one replica: a slow endpoint uses its own slots
    # and never the others'.
    webhook_per_endpoint_concurrency: int = Field(default=4, ge=1, le=100)
    # Attempts in flight in one replica altogether.
    webhook_max_in_flight: int = Field(default=200, ge=1)
    # Delay before each retry after a failed attempt; its length is the number of retries.
    webhook_retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
    )
    # Spread of each delay, as a fraction either side: retries of many deliveries that failed
    # together (an endpoint's outage) do not all return at the same instant.
    webhook_retry_jitter: float = Field(default=0.1, ge=0, lt=1)
    # How much of each response the delivery log keeps.
    webhook_response_body_limit: int = Field(default=2048, ge=0, le=65536)

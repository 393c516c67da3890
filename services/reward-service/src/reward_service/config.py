from __future__ import annotations

from pydantic import Field

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    http_port: int = 8003
    # How often the releaser looks for rewards whose holding period has ended; the schedule lives
    # in Postgres, so this only bounds how late a release can be, never whether it happens.
    release_poll_interval_seconds: float = Field(default=5.0, gt=0)
    # Rewards released per transaction; a full batch is followed at once by the next one.
    release_batch_size: int = Field(default=500, ge=1, le=10_000)
    # Lets POST /v1/dev/clock/advance move this service's clock forward (holds are whole days;
    # local runs and tests need them to end). Honoured only with ENVIRONMENT=dev: set anywhere
    # else, the service refuses to start.
    dev_clock_control: bool = False
    # How long a write under a program not heard of yet (PUT reward-rule, POST coupon-pools)
    # waits for the program's event from link-service before answering 409 with Retry-After:
    # the event lands ~100 ms after the program is created, so a rule written straight after
    # creating its program is accepted; 0: answer 409 at once.
    program_event_wait_seconds: float = Field(default=5.0, ge=0, le=30)

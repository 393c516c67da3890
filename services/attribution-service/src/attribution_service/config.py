from __future__ import annotations

from pydantic import Field

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    http_port: int = 8002
    # How long a conversion naming a click or code not seen yet waits for it (consumer lag)
    # before it is decided without that evidence.
    evidence_grace_seconds: int = Field(default=600, ge=1)
    pending_sweep_interval_seconds: float = Field(default=15.0, gt=0)

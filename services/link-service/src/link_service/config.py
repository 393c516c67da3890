from __future__ import annotations

from pydantic import Field

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    http_port: int = 8001
    # Base of the share links handed to advocates: the public host of /r/{code}.
    public_base_url: str = "http://127.0.0.1:8001"
    # Key of the HMAC that replaces client IPs in click records (rotate like any secret).
    ip_hash_key: str = Field(default="dev-only-ip-hash-key", min_length=8)
    code_length: int = Field(default=8, ge=6, le=16)

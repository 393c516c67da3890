from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Downloads that outlive a clone (Kafka's jars): $REFERRAL_CACHE_DIR or ~/.cache."""
    base = os.environ.get("REFERRAL_CACHE_DIR") or Path.home() / ".cache" / "referral-platform"
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port

"""Secret keys' public dev defaults are accepted only with ENVIRONMENT=dev (issue #21: they were
accepted silently anywhere)."""

from __future__ import annotations

import pytest

from servicekit.settings import InsecureSettings, ServiceSettings, refuse_dev_defaults


def test_a_dev_default_outside_dev_refuses_to_start_naming_the_variable() -> None:
    settings = ServiceSettings()
    assert settings.environment == "production"  # fails closed when nobody says
    with pytest.raises(InsecureSettings, match="IP_HASH_KEY still holds the public dev default"):
        refuse_dev_defaults(settings, {"IP_HASH_KEY": ("dev-key", "dev-key")})


def test_dev_accepts_the_defaults_and_a_real_key_is_accepted_anywhere() -> None:
    refuse_dev_defaults(ServiceSettings(environment="dev"), {"K": ("dev-key", "dev-key")})
    refuse_dev_defaults(ServiceSettings(), {"K": ("a-real-secret", "dev-key")})

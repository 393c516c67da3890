"""Each service refuses to start outside ENVIRONMENT=dev while a secret key holds its public
dev default (issue #21: IP_HASH_KEY and the unsubscribe key were accepted silently). The apps
are only built, never served: no infrastructure needed."""

from __future__ import annotations

import pytest


def test_the_services_refuse_their_dev_keys_outside_dev() -> None:
    from attribution_service.config import Settings as AttributionSettings
    from attribution_service.main import create_app as attribution_app
    from link_service.config import Settings
    from link_service.main import create_app
    from notification_service.config import Settings as NotificationSettings
    from notification_service.main import create_app as notification_app
    from servicekit.settings import InsecureSettings

    for app, settings, name in [
        (create_app, Settings, "IP_HASH_KEY"),
        (attribution_app, AttributionSettings, "IP_HASH_KEY"),
        (notification_app, NotificationSettings, "EMAIL_UNSUBSCRIBE_KEY"),
        (attribution_app, AttributionSettings, "SECRETS_KEY"),
        (notification_app, NotificationSettings, "SECRETS_KEY"),
    ]:
        with pytest.raises(InsecureSettings, match=name):
            app(settings(environment="production"))
        app(settings(environment="dev"))


def test_every_service_refuses_the_dev_privacy_key_outside_dev() -> None:
    """PRIVACY_HASH_KEY (tombstones of erased people, docs/privacy.md) in all four."""
    from attribution_service.config import Settings as AttributionSettings
    from attribution_service.main import create_app as attribution_app
    from link_service.config import Settings
    from link_service.main import create_app
    from notification_service.config import Settings as NotificationSettings
    from notification_service.main import create_app as notification_app
    from reward_service.config import Settings as RewardSettings
    from reward_service.main import create_app as reward_app
    from servicekit.settings import InsecureSettings

    for app, settings in [
        (create_app, Settings),
        (attribution_app, AttributionSettings),
        (notification_app, NotificationSettings),
        (reward_app, RewardSettings),
    ]:
        with pytest.raises(InsecureSettings, match="PRIVACY_HASH_KEY"):
            app(settings(environment="production"))
        app(settings(environment="dev", privacy_hash_key="a-real-secret-key"))

"""reward-service's part of a personal data request (servicekit.privacy): its declarations
(registry: the friend's holder id pseudonymised everywhere, amounts untouched), in the
request's inbox transaction with the confirmation."""

from __future__ import annotations

from reward_service.events import EVENTS
from reward_service.privacy.registry import PERSONAL_DATA
from servicekit.privacy import request_handler

SERVICE = "reward-service"

on_privacy_requested = request_handler(SERVICE, PERSONAL_DATA, EVENTS)

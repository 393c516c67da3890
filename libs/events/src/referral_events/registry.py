"""Type name -> payload model, built from the contracts modules."""

from __future__ import annotations

from referral_events.contracts import attribution, link, notification, privacy, reward
from referral_events.envelope import CloudEvent, EventPayload

_MODULES = (link, attribution, reward, notification, privacy)

PAYLOADS: dict[str, type[EventPayload]] = {
    model.TYPE: model
    for module in _MODULES
    for model in vars(module).values()
    if isinstance(model, type) and issubclass(model, EventPayload) and hasattr(model, "TYPE")
}


class UnknownEventType(LookupError):
    pass


def payload_type(type_name: str) -> type[EventPayload]:
    try:
        return PAYLOADS[type_name]
    except KeyError:
        raise UnknownEventType(type_name) from None


def parse_payload(event: CloudEvent) -> EventPayload:
    return payload_type(event.type).model_validate(event.data)

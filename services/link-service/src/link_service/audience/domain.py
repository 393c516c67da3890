"""A program's audience as the rules read it: its custom attribute definitions, segments and
eligibility (servicekit.audience holds the rules themselves, shared with the services that
decide on them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from servicekit import audience


def _doc(value: Any) -> Any:
    # jsonb comes back decoded on the service's pool and as text on a bare connection
    return json.loads(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Audience:
    definitions: Mapping[str, str] = field(default_factory=dict)
    segments: tuple[audience.Segment, ...] = ()
    eligibility: audience.Eligibility = field(default_factory=audience.Eligibility)
    version: int = 0

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> Audience:
        if row is None:
            return cls()
        return cls(
            dict(_doc(row["attributes"])),
            audience.segments_from_json(_doc(row["segments"])),
            audience.eligibility_from_json(_doc(row["eligibility"])),
            row["version"],
        )

    @classmethod
    def parse(cls, attributes: Any, segments: Any, eligibility: Any) -> Audience:
        """A body checked whole: an undefined attribute in a condition, an unknown type, a
        country outside ISO 3166-1 are 422 at their JSON pointer."""
        defs = audience.definitions(attributes, "/attributes")
        segs = audience.segments(segments, defs, "/segments")
        return cls(defs, segs, audience.eligibility(eligibility, segs, "/eligibility"))

    def to_json(self) -> dict[str, Any]:
        return {
            "attributes": dict(self.definitions),
            "segments": audience.segments_json(self.segments),
            "eligibility": self.eligibility.to_json(),
        }


def attributes_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """An advocate row's current attributes."""
    return dict(_doc(row["attributes"]) or {})

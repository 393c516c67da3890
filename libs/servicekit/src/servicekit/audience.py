"""Advocate attributes, segments and eligibility, pure: the one home of what an attribute may
hold, what a segment's condition means and who is eligible, so link-service (enrollment,
previews), reward-service (rule variants) and attribution-service (friends' countries) decide
alike on the documents link-service publishes (`program.audience_changed`,
`advocate.attributes_changed`). No I/O.

Bad input raises servicekit.problems.InvalidInput whose `field` is a JSON pointer under the
caller's `at` (e.g. `/segments/0/condition/all/1/attribute`). Country codes are ISO 3166-1
alpha-2, checked against pycountry's maintained list."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import pycountry

from servicekit.problems import InvalidInput

AttributeType = Literal["string", "number", "boolean", "date"]
ATTRIBUTE_TYPES: tuple[AttributeType, ...] = ("string", "number", "boolean", "date")
# Every program has these; `country` holds an ISO 3166-1 alpha-2 code, `tags` a list of words.
BUILTIN: Mapping[str, str] = {
    "plan": "string",
    "country": "country",
    "language": "string",
    "tags": "tags",
}
NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_CUSTOM = 50
MAX_STRING = 200
MAX_TAGS = 50
MAX_DEPTH = 5
COMPARISONS = ("gt", "gte", "lt", "lte")

Attributes = Mapping[str, Any]


def pointer(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901) from its reference tokens."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def is_country(code: str) -> bool:
    return len(code) == 2 and pycountry.countries.get(alpha_2=code.upper()) is not None


def country(value: Any, at: str) -> str:
    """An ISO 3166-1 alpha-2 code, upper-cased, or InvalidInput at `at`."""
    if not isinstance(value, str) or not is_country(value):
        raise InvalidInput(f"{value!r} is not an ISO 3166-1 alpha-2 country code", field=at)
    return value.upper()


def countries(values: Any, at: str) -> tuple[str, ...]:
    if not isinstance(values, list) or len(values) > 300:
        raise InvalidInput("a list of at most 300 country codes", field=at)
    return tuple(sorted({country(v, pointer_join(at, i)) for i, v in enumerate(values)}))


def pointer_join(at: str, *parts: str | int) -> str:
    return at + pointer(*parts)


# ---------------------------------------------------------------------------- definitions


def definitions(doc: Any, at: str = "/attributes") -> dict[str, AttributeType]:
    """A program's custom attributes, name -> type; unknown types and names taken by the
    built-in attributes are refused."""
    if not isinstance(doc, Mapping):
        raise InvalidInput("an object of attribute name -> type", field=at)
    if len(doc) > MAX_CUSTOM:
        raise InvalidInput(f"at most {MAX_CUSTOM} custom attributes", field=at)
    out: dict[str, AttributeType] = {}
    for name, kind in doc.items():
        where = pointer_join(at, name)
        if not NAME.fullmatch(name):
            raise InvalidInput("a name is 1-40 lower-case letters, digits or _", field=where)
        if name in BUILTIN:
            raise InvalidInput(f"'{name}' is a built-in attribute", field=where)
        if kind not in ATTRIBUTE_TYPES:
            raise InvalidInput(
                f"unknown attribute type {kind!r} (one of {', '.join(ATTRIBUTE_TYPES)})",
                field=where,
            )
        out[name] = kind
    return out


def type_of(name: str, defs: Mapping[str, str]) -> str | None:
    return BUILTIN.get(name) or defs.get(name)


def _value(kind: str, value: Any, at: str) -> Any:
    if kind == "country":
        return country(value, at)
    if kind == "tags":
        if not isinstance(value, list) or len(value) > MAX_TAGS:
            raise InvalidInput(f"a list of at most {MAX_TAGS} tags", field=at)
        tags = []
        for i, t in enumerate(value):
            if not isinstance(t, str) or not 1 <= len(t) <= 100:
                raise InvalidInput("a tag is a string of 1-100 characters", field=f"{at}/{i}")
            tags.append(t)
        return sorted(set(tags))
    if kind == "string":
        if not isinstance(value, str) or len(value) > MAX_STRING:
            raise InvalidInput(f"a string of at most {MAX_STRING} characters", field=at)
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput("a number", field=at)
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidInput("true or false", field=at)
        return value
    # date: an ISO 8601 calendar date, kept as its text (it sorts as the date does)
    if not isinstance(value, str):
        raise InvalidInput("a date, YYYY-MM-DD", field=at)
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise InvalidInput(f"{value!r} is not a date (YYYY-MM-DD)", field=at) from None


def attributes(values: Any, defs: Mapping[str, str], at: str = "/attributes") -> dict[str, Any]:
    """Attribute values checked against their types; `null` removes one (kept as None so a
    partial update can say so)."""
    if not isinstance(values, Mapping):
        raise InvalidInput("an object of attribute name -> value", field=at)
    out: dict[str, Any] = {}
    for name, value in values.items():
        where = pointer_join(at, name)
        kind = type_of(name, defs)
        if kind is None:
            raise InvalidInput(
                f"'{name}' is not an attribute of this program (define it first)", field=where
            )
        out[name] = None if value is None else _value(kind, value, where)
    return out


def merged(current: Attributes, changes: Attributes) -> dict[str, Any]:
    """`current` with `changes` applied (a None removes the attribute)."""
    out = dict(current)
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """One node: `op` is equals, in, gt, gte, lt, lte (on `attribute`), has_tag, all or any."""

    op: str
    attribute: str | None = None
    value: Any = None
    values: tuple[Any, ...] = ()
    children: tuple[Condition, ...] = field(default_factory=tuple)

    def matches(self, attrs: Attributes) -> bool:
        if self.op == "all":
            return all(c.matches(attrs) for c in self.children)
        if self.op == "any":
            return any(c.matches(attrs) for c in self.children)
        if self.op == "has_tag":
            return self.value in (attrs.get("tags") or ())
        assert self.attribute is not None
        have = attrs.get(self.attribute)
        if have is None:
            return False
        if self.op == "equals":
            return bool(have == self.value)
        if self.op == "in":
            return have in self.values
        try:
            if self.op == "gt":
                return bool(have > self.value)
            if self.op == "gte":
                return bool(have >= self.value)
            if self.op == "lt":
                return bool(have < self.value)
            return bool(have <= self.value)
        except TypeError:
            return False

    def to_json(self) -> dict[str, Any]:
        if self.op in ("all", "any"):
            return {self.op: [c.to_json() for c in self.children]}
        if self.op == "has_tag":
            return {"has_tag": self.value}
        if self.op == "in":
            return {"attribute": self.attribute, "in": list(self.values)}
        return {"attribute": self.attribute, self.op: self.value}

    def value_set(self) -> tuple[str, frozenset[Any]] | None:
        """(attribute, the values it admits) when the condition is an equals or in."""
        if self.op == "equals" and self.attribute is not None:
            return self.attribute, frozenset([self.value])
        if self.op == "in" and self.attribute is not None:
            return self.attribute, frozenset(self.values)
        return None


def condition(
    doc: Any, defs: Mapping[str, str], at: str = "/condition", depth: int = 0
) -> Condition:
    """A condition document parsed; an undefined attribute, a comparison on a type without
    order or a value of the wrong type is refused at its pointer."""
    if depth > MAX_DEPTH:
        raise InvalidInput(f"conditions nest at most {MAX_DEPTH} deep", field=at)
    if not isinstance(doc, Mapping):
        raise InvalidInput("a condition is an object", field=at)
    for group in ("all", "any"):
        if group in doc:
            if len(doc) != 1:
                raise InvalidInput(f"'{group}' stands alone in its object", field=at)
            items = doc[group]
            if not isinstance(items, list) or not 1 <= len(items) <= 20:
                raise InvalidInput("a list of 1-20 conditions", field=f"{at}/{group}")
            return Condition(
                group,
                children=tuple(
                    condition(c, defs, f"{at}/{group}/{i}", depth + 1) for i, c in enumerate(items)
                ),
            )
    if "has_tag" in doc:
        if len(doc) != 1:
            raise InvalidInput("'has_tag' stands alone in its object", field=at)
        tag = doc["has_tag"]
        if not isinstance(tag, str) or not 1 <= len(tag) <= 100:
            raise InvalidInput("a tag is a string of 1-100 characters", field=f"{at}/has_tag")
        return Condition("has_tag", value=tag)
    name = doc.get("attribute")
    if not isinstance(name, str):
        raise InvalidInput(
            "a condition is all, any, has_tag, or an attribute with equals, in, gt, gte, lt, lte",
            field=f"{at}/attribute",
        )
    kind = type_of(name, defs)
    if kind is None:
        raise InvalidInput(f"'{name}' is not a defined attribute", field=f"{at}/attribute")
    ops = [k for k in doc if k != "attribute"]
    if len(ops) != 1 or ops[0] not in ("equals", "in", *COMPARISONS):
        raise InvalidInput("one of equals, in, gt, gte, lt, lte", field=at)
    op = ops[0]
    if kind == "tags":
        raise InvalidInput("tags are matched with has_tag", field=f"{at}/attribute")
    scalar = kind
    if op in COMPARISONS and kind not in ("number", "date"):
        raise InvalidInput(f"{op} compares numbers and dates, not {kind}", field=f"{at}/{op}")
    if op == "in":
        items = doc["in"]
        if not isinstance(items, list) or not 1 <= len(items) <= 100:
            raise InvalidInput("a list of 1-100 values", field=f"{at}/in")
        return Condition(
            "in",
            name,
            values=tuple(_value(scalar, v, f"{at}/in/{i}") for i, v in enumerate(items)),
        )
    return Condition(op, name, value=_value(scalar, doc[op], f"{at}/{op}"))


def condition_from_json(doc: Mapping[str, Any]) -> Condition:
    """A stored (already checked) condition."""
    for group in ("all", "any"):
        if group in doc:
            return Condition(group, children=tuple(condition_from_json(c) for c in doc[group]))
    if "has_tag" in doc:
        return Condition("has_tag", value=doc["has_tag"])
    name = doc["attribute"]
    if "in" in doc:
        return Condition("in", name, values=tuple(doc["in"]))
    (op,) = (k for k in doc if k != "attribute")
    return Condition(op, name, value=doc[op])


def could_overlap(a: Condition, b: Condition) -> bool:
    """Whether one advocate could match both: false only where both admit values of the same
    attribute and no value both (plan equals basic / plan in [plus, pro]); anything else is
    taken to overlap."""
    sa, sb = a.value_set(), b.value_set()
    if sa is None or sb is None or sa[0] != sb[0]:
        return True
    return bool(sa[1] & sb[1])


# ---------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class Segment:
    name: str
    condition: Condition


def segments(doc: Any, defs: Mapping[str, str], at: str = "/segments") -> tuple[Segment, ...]:
    if not isinstance(doc, list) or len(doc) > 50:
        raise InvalidInput("a list of at most 50 segments", field=at)
    out: list[Segment] = []
    for i, s in enumerate(doc):
        where = pointer_join(at, i)
        if not isinstance(s, Mapping) or set(s) != {"name", "condition"}:
            raise InvalidInput("a segment is {name, condition}", field=where)
        name = s["name"]
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise InvalidInput(
                "a name is 1-40 lower-case letters, digits or _", field=f"{where}/name"
            )
        if any(o.name == name for o in out):
            raise InvalidInput(f"segment '{name}' is named twice", field=f"{where}/name")
        out.append(Segment(name, condition(s["condition"], defs, f"{where}/condition")))
    return tuple(out)


def segments_json(segs: Sequence[Segment]) -> list[dict[str, Any]]:
    return [{"name": s.name, "condition": s.condition.to_json()} for s in segs]


def segments_from_json(doc: Sequence[Mapping[str, Any]]) -> tuple[Segment, ...]:
    return tuple(Segment(s["name"], condition_from_json(s["condition"])) for s in doc)


def matching(segs: Sequence[Segment], attrs: Attributes) -> frozenset[str]:
    """The names of the segments `attrs` match."""
    return frozenset(s.name for s in segs if s.condition.matches(attrs))


# ---------------------------------------------------------------------------- eligibility


@dataclass(frozen=True)
class CountryRule:
    """Allowed countries (empty: any) minus denied ones."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.allow and not self.deny

    def refuses(self, code: str | None, *, unknown_passes: bool = False) -> str | None:
        """The rule's name that refuses `code`, or None. An unknown country (None) passes a
        deny list; it fails a non-empty allow list unless `unknown_passes` (a friend's country
        counts only where the merchant sends it)."""
        if code is not None and code.upper() in self.deny:
            return "countries_deny"
        if self.allow and code is None and unknown_passes:
            return None
        if self.allow and (code is None or code.upper() not in self.allow):
            return "countries_allow"
        return None

    def to_json(self) -> dict[str, list[str]]:
        return {"countries_allow": list(self.allow), "countries_deny": list(self.deny)}


@dataclass(frozen=True)
class Eligibility:
    """Who may enroll (a segment they must match, their country attribute), and which friends
    count (the country of the conversion, where the merchant sends it)."""

    enroll_segment: str | None = None
    enroll_countries: CountryRule = CountryRule()
    friend_countries: CountryRule = CountryRule()

    def enroll_refusal(
        self, segs: Sequence[Segment], attrs: Attributes
    ) -> tuple[str, str, str] | None:
        """(rule, field, message) that refuses enrolling an advocate with `attrs`, or None."""
        why = self.enroll_countries.refuses(attrs.get("country"))
        if why is not None:
            return (
                f"eligibility.enroll.{why}",
                "/attributes/country",
                f"the program's enrollment {why.replace('_', ' ')} list refuses country "
                f"{attrs.get('country')!r}",
            )
        if self.enroll_segment is not None:
            seg = next((s for s in segs if s.name == self.enroll_segment), None)
            if seg is None or not seg.condition.matches(attrs):
                return (
                    "eligibility.enroll.segment",
                    "/attributes",
                    f"enrollment is open to segment '{self.enroll_segment}' only",
                )
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "enroll": {"segment": self.enroll_segment, **self.enroll_countries.to_json()},
            "friends": self.friend_countries.to_json(),
        }


def _country_rule(doc: Mapping[str, Any], at: str) -> CountryRule:
    return CountryRule(
        countries(doc.get("countries_allow", []), f"{at}/countries_allow"),
        countries(doc.get("countries_deny", []), f"{at}/countries_deny"),
    )


def eligibility(doc: Any, segs: Sequence[Segment], at: str = "/eligibility") -> Eligibility:
    if not isinstance(doc, Mapping) or set(doc) - {"enroll", "friends"}:
        raise InvalidInput("an object with enroll and friends", field=at)
    enroll = doc.get("enroll") or {}
    friends = doc.get("friends") or {}
    for part, body, keys in (
        ("enroll", enroll, {"segment", "countries_allow", "countries_deny"}),
        ("friends", friends, {"countries_allow", "countries_deny"}),
    ):
        if not isinstance(body, Mapping):
            raise InvalidInput("an object", field=f"{at}/{part}")
        unknown = set(body) - keys
        if unknown:
            raise InvalidInput(f"unknown field '{sorted(unknown)[0]}'", field=f"{at}/{part}")
    seg = enroll.get("segment")
    if seg is not None and not any(s.name == seg for s in segs):
        raise InvalidInput(f"no segment '{seg}'", field=f"{at}/enroll/segment")
    return Eligibility(
        seg, _country_rule(enroll, f"{at}/enroll"), _country_rule(friends, f"{at}/friends")
    )


def eligibility_from_json(doc: Mapping[str, Any] | None) -> Eligibility:
    if not doc:
        return Eligibility()
    enroll, friends = doc.get("enroll") or {}, doc.get("friends") or {}
    return Eligibility(
        enroll.get("segment"),
        CountryRule(
            tuple(enroll.get("countries_allow", ())), tuple(enroll.get("countries_deny", ()))
        ),
        CountryRule(
            tuple(friends.get("countries_allow", ())), tuple(friends.get("countries_deny", ()))
        ),
    )


# ---------------------------------------------------------------------------- versions


@dataclass(frozen=True)
class Change:
    """One advocate.attributes_changed: `changes` in force from `effective_at`; `change`
    numbers the advocate's changes in the order link-service recorded them."""

    change: int
    effective_at: datetime
    changes: Mapping[str, Any]


def state_at(changes: Sequence[Change], at: datetime | None) -> dict[str, Any]:
    """The attributes in force at `at` (None: now, every change): each change effective by
    then, applied in (effective_at, change) order. A change recorded late but dated earlier
    takes its place by its date, so every service folding the same changes agrees."""
    state: dict[str, Any] = {}
    for c in sorted(changes, key=lambda c: (c.effective_at, c.change)):
        if at is not None and c.effective_at > at:
            break
        state = merged(state, c.changes)
    return state

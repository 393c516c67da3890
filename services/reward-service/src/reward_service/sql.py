"""Helpers the feature repositories share to write statements from column lists: parameters are
numbered from the list (never `$22` by hand), values are passed in the list's order, and a
record is read into the dataclass whose fields its columns name."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, init=False)
class Columns:
    """A statement's columns in order, each named `column` or `column::type` (the Postgres type
    its parameter is cast to; an INSERT's VALUES need none, an unnest() array needs one)."""

    typed: tuple[tuple[str, str], ...]
    names: tuple[str, ...]

    def __init__(self, *spec: str) -> None:
        typed = tuple((name, pg) for name, _, pg in (s.partition("::") for s in spec))
        object.__setattr__(self, "typed", typed)
        object.__setattr__(self, "names", tuple(name for name, _ in typed))

    def __len__(self) -> int:
        return len(self.typed)

    def listed(self) -> str:
        return ", ".join(self.names)

    def params(self, first: int = 1) -> str:
        """`$first, $first+1, ...`, cast where a type is given."""
        return ", ".join(
            f"${i}::{pg}" if pg else f"${i}" for i, (_, pg) in enumerate(self.typed, first)
        )

    def arrays(self, first: int = 1) -> str:
        """`unnest(...)`'s arguments: one array parameter per column."""
        return ", ".join(f"${i}::{pg}[]" for i, (_, pg) in enumerate(self.typed, first))

    def insert(self, table: str, tail: str = "") -> str:
        """`INSERT INTO table (columns) VALUES ($1, ...) tail`, for a constant table and tail."""
        sql = f"INSERT INTO {table} ({self.listed()}) VALUES ({self.params()}) {tail}"  # noqa: S608
        return sql.strip()

    def values(self, source: object, **given: object) -> list[object]:
        """The parameters in column order: `given` by name, the rest `source`'s attributes."""
        return [given[n] if n in given else getattr(source, n) for n in self.names]


_FIELDS: dict[type[Any], tuple[str, ...]] = {}


def _fields(cls: type[Any]) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


_ABSENT = object()


def record_as(cls: type[T], row: asyncpg.Record, **given: object) -> T:
    """The dataclass `cls` from the record's columns named like its fields (other columns are
    passed over; a field with no column keeps its default); `given` fills or overrides fields."""
    values: dict[str, object] = {}
    for name in _fields(cls):
        value = given[name] if name in given else row.get(name, _ABSENT)
        if value is not _ABSENT:
            values[name] = value
    return cls(**values)

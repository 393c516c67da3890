"""Statements written from column lists: parameters numbered from a list of names (a
conversion's columns, a reward's, or an array of each for a batch), values passed in the same
order, so adding a column is one line and no `$22` is ever counted by hand; and a record read
into the dataclass whose fields its columns name."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")


@dataclass(frozen=True)
class Params:
    """`names` as the parameters `$first`, `$first+1`, ... of one statement; `types` are their
    SQL types where not text (for casts and arrays)."""

    names: tuple[str, ...]
    first: int = 1
    types: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def typed(cls, *spec: str, first: int = 1) -> Params:
        """From `column` or `column::type` names (the Postgres type its parameter is cast to;
        an INSERT's VALUES need none, an unnest() array needs one)."""
        split = [s.partition("::") for s in spec]
        return cls(
            tuple(name for name, _, _ in split),
            first,
            {name: pg for name, _, pg in split if pg},
        )

    @classmethod
    def of(cls, dataclass_type: type[Any], types: Mapping[str, str] | None = None) -> Params:
        """A dataclass's fields, in order (its values then pass as `values` or `columns`)."""
        return cls(tuple(f.name for f in fields(dataclass_type)), types=types or {})

    def __getitem__(self, name: str) -> str:
        return f"${self.first + self.names.index(name)}"

    @property
    def refs(self) -> dict[str, str]:
        """Every name's placeholder, for str.format."""
        return {n: self[n] for n in self.names}

    @property
    def next(self) -> int:
        """The number of the parameter after these."""
        return self.first + len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def listed(self) -> str:
        """The names as a column list."""
        return ", ".join(self.names)

    def placeholders(self, *, cast: bool = False) -> str:
        """`$1, $2, ...`, e.g. for a VALUES list in the order of `names`; with `cast`, each
        cast to its type where one is given."""
        return ", ".join(
            f"{self[n]}::{self.types[n]}" if cast and n in self.types else self[n]
            for n in self.names
        )

    def insert(self, table: str, tail: str = "") -> str:
        """`INSERT INTO table (names) VALUES ($1, ...) tail`, for a constant table and tail."""
        sql = (
            f"INSERT INTO {table} ({self.listed()}) VALUES ({self.placeholders(cast=True)}) {tail}"  # noqa: S608
        )
        return sql.strip()

    def arrays(self) -> str:
        """`$1::text[], $2::bigint[], ...`: each parameter an array (see `columns`)."""
        return ", ".join(f"{self[n]}::{self.types.get(n, 'text')}[]" for n in self.names)

    def values(self, item: Any, **given: Any) -> list[Any]:
        """The attributes of `item` named, in order; `given` by name instead where passed."""
        return [given[n] if n in given else getattr(item, n) for n in self.names]

    def bind(self, values: Mapping[str, Any]) -> list[Any]:
        """The values named, in order."""
        return [values[n] for n in self.names]

    def columns(self, items: Sequence[Any]) -> list[list[Any]]:
        """One array per name: that attribute of every item, in order."""
        return [[getattr(i, n) for i in items] for n in self.names]

    def then(self, names: Iterable[str], types: Mapping[str, str] | None = None) -> Params:
        """Parameters numbered on from these."""
        return Params(tuple(names), self.next, types or {})

    def then_typed(self, *spec: str) -> Params:
        """`typed` parameters numbered on from these."""
        return Params.typed(*spec, first=self.next)


def columns_of(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Row tuples as the column arrays `unnest` takes, one per column (`width` of them, so a
    statement gets its parameters also when there are no rows)."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


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

"""Numbered parameters from a list of names, for statements that pass many values (a
conversion's columns, or an array of each for a batch): the statement names a value, this
numbers it, and the values are passed in the same order, so adding a column is one line and no
`$22` is ever counted by hand."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Params:
    """`names` as the parameters `$first`, `$first+1`, ... of one statement; `types` are their
    SQL types where not text (for casts and arrays)."""

    names: tuple[str, ...]
    first: int = 1
    types: Mapping[str, str] = field(default_factory=dict)

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

    def placeholders(self) -> str:
        """`$1, $2, ...`, e.g. for a VALUES list in the order of `names`."""
        return ", ".join(self[n] for n in self.names)

    def arrays(self) -> str:
        """`$1::text[], $2::bigint[], ...`: each parameter an array (see `columns`)."""
        return ", ".join(f"{self[n]}::{self.types.get(n, 'text')}[]" for n in self.names)

    def values(self, item: Any) -> list[Any]:
        """The attributes of `item` named, in order."""
        return [getattr(item, n) for n in self.names]

    def bind(self, values: Mapping[str, Any]) -> list[Any]:
        """The values named, in order."""
        return [values[n] for n in self.names]

    def columns(self, items: Sequence[Any]) -> list[list[Any]]:
        """One array per name: that attribute of every item, in order."""
        return [[getattr(i, n) for i in items] for n in self.names]

    def then(self, names: Iterable[str], types: Mapping[str, str] | None = None) -> Params:
        """Parameters numbered on from these."""
        return Params(tuple(names), self.next, types or {})

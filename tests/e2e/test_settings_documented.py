"""Every environment variable a service reads is documented in docs/operations.md, with its
default. Walks the real Settings classes (pydantic-settings), inherited fields included, so a
setting added to any service fails here until its row is written. No infrastructure needed."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from devstack.services import SERVICES
from servicekit.settings import ServiceSettings

DOCS = Path(__file__).resolve().parents[2] / "docs/operations.md"
# A table row: | `NAME` | default | meaning |, also | `A` / `B` | a / b | meaning | and
# | `NAME` (or `OTHER`) | default | meaning |.
ROW = re.compile(r"^\|(?P<names>[^|]*`[A-Z0-9_]+`[^|]*)\|(?P<default>[^|]*)\|", re.MULTILINE)


def _settings_classes() -> dict[str, type[BaseSettings]]:
    classes: dict[str, type[BaseSettings]] = {"servicekit": ServiceSettings}
    for svc in SERVICES:
        module = importlib.import_module(f"{svc.package}.config")
        classes[svc.name] = module.Settings
    return classes


def _variables(cls: type[BaseSettings]) -> dict[str, FieldInfo]:
    """Environment variable name -> field, as pydantic-settings maps them."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    names = {}
    for name, info in cls.model_fields.items():
        alias = info.validation_alias or info.alias
        names[alias.upper() if isinstance(alias, str) else (prefix + name).upper()] = info
    return names


def _documented() -> dict[str, list[str]]:
    """Variable -> the default cells of its rows (a variable two services read with different
    defaults, such as PUBLIC_BASE_URL, has a row in each service's table)."""
    rows: dict[str, list[str]] = {}
    for m in ROW.finditer(DOCS.read_text()):
        names = re.findall(r"`([A-Z0-9_]+)`", m["names"])
        defaults = [d.strip() for d in m["default"].split(" / ")]
        if len(defaults) != len(names):
            defaults = [m["default"].strip()] * len(names)
        for name, default in zip(names, defaults, strict=True):
            rows.setdefault(name, []).append(default)
    return rows


def _spellings(value: Any) -> list[str]:
    """How a scalar default may be written in the docs."""
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, float):
        return [f"{value:g}", str(value)]
    if isinstance(value, int | str):
        return [str(value)]
    return []


CASES = [
    (owner, var, info)
    for owner, cls in _settings_classes().items()
    for var, info in _variables(cls).items()
]


def test_every_service_has_settings() -> None:
    assert {owner for owner, _, _ in CASES} == {"servicekit", *(s.name for s in SERVICES)}
    assert len(CASES) > 20


@pytest.mark.parametrize(("owner", "var", "info"), CASES, ids=[f"{o}:{v}" for o, v, _ in CASES])
def test_variable_is_documented_with_its_default(owner: str, var: str, info: FieldInfo) -> None:
    documented = _documented()
    assert var in documented, (
        f"{owner} reads {var}, which has no row in docs/operations.md "
        "(| `NAME` | default | meaning |)"
    )
    cells = documented[var]
    assert all(cells), f"{var}: the default column is empty"
    default = info.default
    if default is PydanticUndefined or default is None or info.default_factory is not None:
        return  # required, unset or computed: the row says so in words
    spellings = _spellings(default)
    if not spellings or not str(default):
        return
    # The variable may be overridden per service (HTTP_PORT): any documented spelling counts.
    assert any(s in cell for s in spellings for cell in cells), (
        f"{owner} {var}: default {default!r} is not what docs/operations.md says ({cells})"
    )

"""Every kind of error a service can answer with is documented: each type of
servicekit.problems.PROBLEM_TYPES (the handlers' own and those services register) and the `type`
of every DomainError subclass any service defines has its row in docs/problems.md, with its
status. Imports every module of every service (no infrastructure)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from devstack.services import SERVICES
from servicekit.problems import PROBLEM_BASE, PROBLEM_TYPES, DomainError

DOC = Path(__file__).resolve().parents[2] / "docs" / "problems.md"
ROW = re.compile(r"^\| `(?P<uri>[^`]+)` \| (?P<status>\d+|other) \|", re.MULTILINE)


def _subclasses(cls: type[DomainError]) -> set[type[DomainError]]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def _import_everything() -> None:
    for package in ["servicekit", *(svc.package for svc in SERVICES)]:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            if ".migrations" not in info.name:
                importlib.import_module(info.name)


def test_every_problem_type_is_documented_with_its_status() -> None:
    _import_everything()
    documented = {m["uri"]: m["status"] for m in ROW.finditer(DOC.read_text())}
    kinds = {cls.type: cls.status for cls in _subclasses(DomainError)}
    for kind, (status, _title) in PROBLEM_TYPES.items():
        kinds.setdefault(kind, status)
    missing = sorted(k for k in kinds if PROBLEM_BASE + k not in documented)
    assert not missing, f"docs/problems.md lacks {missing}"
    for kind, status in kinds.items():
        row = documented[PROBLEM_BASE + kind]
        assert row == (str(status) if status else "other"), (kind, status, row)
    # every DomainError subclass's type is a known one (or registered by its service)
    assert set(kinds) <= set(PROBLEM_TYPES), set(kinds) - set(PROBLEM_TYPES)
    # and the doc lists nothing that no longer exists
    assert set(documented) == {PROBLEM_BASE + k for k in PROBLEM_TYPES}

"""docs/security.md maps the OWASP API Security Top 10 (2023) to the tests that cover each
risk: every risk has a row, and every test a row names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
REFERENCE = re.compile(r"`([\w./-]+\.py)::(\w+)`")


def _rows() -> dict[str, str]:
    text = DOC.read_text()
    section = text.split("## OWASP API Security Top 10 (2023)", 1)[1].split("\n## ", 1)[0]
    return {
        m.group(1): line
        for line in section.splitlines()
        if (m := re.match(r"\| (API\d+) ", line)) is not None
    }


def test_every_owasp_risk_has_a_row_naming_tests() -> None:
    rows = _rows()
    assert sorted(rows, key=lambda r: int(r[3:])) == [f"API{i}" for i in range(1, 11)]
    for risk, line in rows.items():
        assert REFERENCE.search(line), f"{risk} names no test"


def test_every_test_the_mapping_names_exists() -> None:
    missing = []
    for line in _rows().values():
        for path, name in REFERENCE.findall(line):
            source = ROOT / path
            if not source.is_file() or not re.search(
                rf"^(async )?def {name}\(", source.read_text(), re.MULTILINE
            ):
                missing.append(f"{path}::{name}")
    assert not missing, missing

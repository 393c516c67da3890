#!/usr/bin/env python3
"""Render services/<svc>/Dockerfile from deploy/docker/Dockerfile.template (stdlib only).

One pattern, four files: each service keeps its own Dockerfile (so `docker build -f
services/<svc>/Dockerfile .`, compose and CI matrices find it by convention and the ENTRYPOINT can
name the service's console script literally), and this script keeps them identical apart from the
service's name. The workspace members whose pyproject.toml the dependency layer copies are read from
the root pyproject's [tool.uv.workspace] members, so a new member cannot be forgotten.

    python3 deploy/tools/render_dockerfiles.py          # write
    python3 deploy/tools/render_dockerfiles.py --check  # exit 1 if any Dockerfile is stale
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "docker" / "Dockerfile.template"


def workspace_members() -> list[Path]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["uv"]["workspace"]["members"]
    members: set[Path] = set()
    for pattern in patterns:
        members.update(p.parent for p in ROOT.glob(f"{pattern}/pyproject.toml"))
    return sorted(m.relative_to(ROOT) for m in members)


def services() -> list[str]:
    return [m.name for m in workspace_members() if m.parts[0] == "services"]


def render(service: str) -> str:
    copies = "\n".join(
        f"COPY {m.as_posix()}/pyproject.toml {m.as_posix()}/" for m in workspace_members()
    )
    text = TEMPLATE.read_text()
    return text.replace("@WORKSPACE_MEMBER_COPIES@", copies).replace("@SERVICE@", service)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for svc in services():
        target = ROOT / "services" / svc / "Dockerfile"
        wanted = render(svc)
        current = target.read_text() if target.exists() else None
        if current == wanted:
            continue
        if check:
            stale.append(str(target.relative_to(ROOT)))
        else:
            target.write_text(wanted)
            print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print(
            "stale Dockerfiles (edit deploy/docker/Dockerfile.template, then run "
            "python3 deploy/tools/render_dockerfiles.py): " + ", ".join(stale),
            file=sys.stderr,
        )
        return 1
    if check:
        print(f"Dockerfiles: {len(services())} services rendered from one template, all current")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

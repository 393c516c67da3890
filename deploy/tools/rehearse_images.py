#!/usr/bin/env python3
"""Rehearse the builder stage of every service Dockerfile without a Docker engine (stdlib only).

No Docker daemon runs on this project's machines, so images are never built here. What can still
go wrong in the build is mostly uv's: the locked workspace must install for one service with
`--frozen --no-dev`, first from the pyproject files alone (the cached dependency layer), then with
the sources, as wheels (`--no-editable`). This script executes the builder stage's own
instructions, read from each services/<svc>/Dockerfile, in a scratch directory:

- COPY (from the build context) copies from the repository, honouring .dockerignore;
- ENV and WORKDIR apply, with absolute paths moved under the scratch directory;
- RUN runs under bash, with `--mount=...` flags dropped (uv then uses the host's cache) and
  UV_COMPILE_BYTECODE=0 (compiling only changes start-up time, not what is installed, and it is
  most of the rehearsal's time).

Then it checks what the runtime stage takes from the builder: the virtualenv exists, holds the
service's console script (the image's ENTRYPOINT) and no development tools, and, once the
service has a main module, `<svc> --help` runs from it (so every runtime import is installed).

    python3 deploy/tools/rehearse_images.py [SERVICE ...]
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV_ONLY = ("pytest", "mypy", "ruff", "devstack", "hypothesis", "pip")


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip().lstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("!"):
            continue  # no negations in this project's .dockerignore
        for candidate in prefixes:
            if fnmatch.fnmatchcase(candidate, pattern):
                return True
            if pattern.startswith("**/"):
                tail = pattern[3:]
                segs = candidate.split("/")
                if any(fnmatch.fnmatchcase("/".join(segs[i:]), tail) for i in range(len(segs))):
                    return True
    return False


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, rest = buf.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    return out


def builder_stage(dockerfile: Path) -> tuple[list[tuple[str, str]], dict[str, str]]:
    args: dict[str, str] = {}
    stage: list[tuple[str, str]] | None = None
    stages: dict[str, list[tuple[str, str]]] = {}
    for keyword, rest in instructions(dockerfile):
        if keyword == "ARG" and stage is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            name = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            stage = stages.setdefault(name, [])
        elif stage is not None:
            stage.append((keyword, rest))
    if "builder" not in stages:
        raise SystemExit(f"{dockerfile}: no `AS builder` stage")
    return stages["builder"], args


def copy_from_context(sources: list[str], dest: Path, patterns: list[str]) -> None:
    for src in sources:
        origin = ROOT / src
        if not origin.exists():
            raise SystemExit(f"COPY {src}: not in the build context")
        if origin.is_file():
            target = dest / origin.name if (str(dest).endswith("/") or dest.is_dir()) else dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
            continue
        for dirpath, dirnames, filenames in os.walk(origin):
            rel_dir = Path(dirpath).relative_to(ROOT).as_posix()
            dirnames[:] = [d for d in dirnames if not ignored(f"{rel_dir}/{d}", patterns)]
            for f in filenames:
                rel = f"{rel_dir}/{f}"
                if ignored(rel, patterns):
                    continue
                target = dest / Path(dirpath).relative_to(origin) / f
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(dirpath) / f, target)


def rehearse(service: str, scratch: Path) -> list[str]:
    dockerfile = ROOT / "services" / service / "Dockerfile"
    steps, _args = builder_stage(dockerfile)
    patterns = dockerignore()
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    workdir = scratch
    uv_syncs = 0

    def inside(path: str) -> Path:
        return scratch / path.lstrip("/") if path.startswith("/") else workdir / path

    for keyword, rest in steps:
        if keyword == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = str(inside(value)) if value.startswith("/") else value
        elif keyword == "WORKDIR":
            workdir = inside(rest)
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            words = rest.split()
            if any(w.startswith("--from") for w in words):
                continue  # the uv binary: the host's uv stands in for it
            *sources, dest = [w for w in words if not w.startswith("--")]
            target = inside(dest)
            if dest.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
            copy_from_context(sources, target, patterns)
        elif keyword == "RUN":
            command = re.sub(r"--mount=\S+\s*", "", rest).strip()
            uv_syncs += "uv sync" in command
            # The Dockerfile's own RUN instruction, run as the build would: trusted input.
            proc = subprocess.run(  # noqa: S603
                ["bash", "-euo", "pipefail", "-c", command],  # noqa: S607
                cwd=workdir,
                env={**env, "UV_COMPILE_BYTECODE": "0"},
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                return [f"RUN {command}\n{proc.stdout}{proc.stderr}"]
    problems = []
    if uv_syncs < 2:
        problems.append("expected the two `uv sync` steps (dependencies, then the workspace)")
    venv = scratch / "app" / ".venv"
    script = venv / "bin" / service
    if not script.exists():
        problems.append(f"{script.relative_to(scratch)} (the ENTRYPOINT) was not installed")
    site = next(venv.glob("lib/python*/site-packages"), None)
    if site is None:
        return [*problems, "no site-packages in the virtualenv"]
    present = {p.name.lower() for p in site.iterdir()}
    for tool in DEV_ONLY:
        if any(n == tool or n.startswith(f"{tool}-") for n in present):
            problems.append(f"development package {tool} is in the runtime virtualenv")
    if (site / "_virtualenv.pth").exists() or list(site.glob("__editable__*")):
        problems.append("workspace packages installed editable (the runtime image has no sources)")
    package = service.replace("-", "_")
    if not list((ROOT / "services" / service / "src").glob("*/main.py")):
        print(f"    {service}: entrypoint smoke test skipped: {package}/main.py not written yet")
    elif script.exists():
        env_run = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(scratch)}
        proc = subprocess.run(  # noqa: S603 (the entrypoint just installed)
            [str(script), "--help"],
            env=env_run,
            capture_output=True,
            text=True,
            cwd=scratch,
        )
        if proc.returncode != 0 or "migrate" not in proc.stdout:
            problems.append(f"`{service} --help` failed in the runtime virtualenv:\n{proc.stderr}")
    return problems


def main(argv: list[str]) -> int:
    services = argv or sorted(p.parent.name for p in ROOT.glob("services/*/Dockerfile"))
    failed = 0
    for service in services:
        with tempfile.TemporaryDirectory(prefix=f"rehearse-{service}-") as tmp:
            problems = rehearse(service, Path(tmp))
        if problems:
            failed += 1
            for p in problems:
                print(f"ERROR {service}: {p}", file=sys.stderr)
        else:
            print(f"    {service}: builder stage OK (uv sync --frozen --no-dev, deps then wheels)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

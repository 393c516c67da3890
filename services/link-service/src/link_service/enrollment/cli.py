"""`link-service enroll-bulk FILE --program prg_… --api-url … --api-key …`: uploads a CSV or
NDJSON file as an enrollment job and shows its progress until it is done."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from servicekit.runtime import Command
from servicekit.settings import ServiceSettings


def enroll_bulk(
    path: Path,
    *,
    program_id: str,
    api_url: str,
    api_key: str,
    console: Console,
    poll_interval: float = 0.5,
    timeout: float = 3600.0,
) -> dict[str, Any]:
    """Uploads, polls with a progress bar, prints a summary; returns the finished job."""
    fmt = "ndjson" if path.suffix.lower() in (".ndjson", ".jsonl") else "csv"
    content_type = "application/x-ndjson" if fmt == "ndjson" else "text/csv"
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=120) as http:
        with path.open("rb") as f:
            r = http.post(
                f"/v1/programs/{program_id}/enrollment-jobs",
                content=f,
                headers={"Content-Type": content_type},
            )
        if r.status_code != 202:
            raise SystemExit(_problem(r))
        job: dict[str, Any] = r.json()
        console.print(f"job [bold]{job['id']}[/]: {job['total_rows']} rows")
        deadline = time.monotonic() + timeout
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("enrolled {task.fields[enrolled]} · existing {task.fields[existing]}"),
            TextColumn("· [red]errors {task.fields[failed]}[/]"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task(
                "enrolling", total=job["total_rows"], enrolled=0, existing=0, failed=0
            )
            while True:
                progress.update(
                    task,
                    completed=job["done_rows"],
                    enrolled=job["enrolled"],
                    existing=job["existing"],
                    failed=job["failed"],
                )
                if job["status"] == "done":
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"job {job['id']} not done after {timeout}s; still running")
                time.sleep(poll_interval)
                r = http.get(f"/v1/enrollment-jobs/{job['id']}")
                if r.status_code != 200:
                    raise SystemExit(_problem(r))
                job = r.json()
        if job["failed"]:
            errors = http.get(
                f"/v1/enrollment-jobs/{job['id']}/errors", params={"limit": 20}
            ).json()["items"]
            table = Table("row", "line", "field", "problem", title="rows not enrolled")
            for e in errors:
                table.add_row(str(e["row"]), str(e["line"]), e["field"] or "", e["message"])
            console.print(table)
            if job["failed"] > len(errors):
                console.print(
                    f"… and {job['failed'] - len(errors)} more: "
                    f"GET /v1/enrollment-jobs/{job['id']}/errors"
                )
    console.print(
        f"done: {job['enrolled']} enrolled, {job['existing']} already enrolled, "
        f"{job['failed']} failed"
    )
    return job


def _problem(r: httpx.Response) -> str:
    try:
        body = r.json()
        return f"{r.status_code} {body.get('title')}: {body.get('detail')}"
    except ValueError:
        return f"{r.status_code}: {r.text[:300]}"


def _enroll_bulk_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "bulk-enroll customers from CSV or NDJSON"
    parser.add_argument("file", type=Path, help=".csv (with header) or .ndjson/.jsonl")
    parser.add_argument("--program", required=True, help="program id (prg_…)")
    parser.add_argument(
        "--api-url", default=os.environ.get("LINK_SERVICE_URL", "http://127.0.0.1:8001")
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LINK_SERVICE_API_KEY"),
        help="API key (default: $LINK_SERVICE_API_KEY)",
    )


def _enroll_bulk(args: argparse.Namespace, _settings: ServiceSettings) -> int:
    # Usage errors exit 2, as argparse's own.
    if not args.api_key:
        print(
            "link-service enroll-bulk: --api-key or LINK_SERVICE_API_KEY is required",
            file=sys.stderr,
        )
        return 2
    if not args.file.is_file():
        print(f"link-service enroll-bulk: {args.file} is not a file", file=sys.stderr)
        return 2
    job = enroll_bulk(
        args.file,
        program_id=args.program,
        api_url=args.api_url,
        api_key=args.api_key,
        console=Console(),
    )
    return 1 if job["failed"] else 0


ENROLL_BULK = Command(
    name="enroll-bulk",
    help="upload a CSV or NDJSON file as an enrollment job and follow it to the end",
    run=_enroll_bulk,
    arguments=_enroll_bulk_arguments,
)

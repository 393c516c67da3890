"""Render bench/results.json into docs/performance.md (issue #24): the table of the latest
figures (date, machine, load average, each figure beside its reference and the ratio) and the
sizing table (cores per 1,000 operations/s of each process, from the measured CPU per
operation), each between its marker comments, which it replaces. `make bench-table`.

Usage: uv run --frozen python bench/render_table.py [--results PATH] [--doc PATH] [--check]
(--check: exit 1 if the doc is not what the results render to).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TABLE = ("<!-- bench-table:start -->", "<!-- bench-table:end -->")
SIZING = ("<!-- sizing-table:start -->", "<!-- sizing-table:end -->")

# Per bench: (label, figure's field, reference's field or None, unit). The first row of every
# bench is its CPU per operation beside the reference's (cpu_ratio) where it measures one.
FIGURES: dict[str, list[tuple[str, str, str | None, str]]] = {
    "redirect": [
        ("CPU per redirect, click on Kafka", "cpu_ms_per_op", "reference_cpu_ms_per_op", "ms"),
        (
            "CPU per click until attribution has it",
            "end_to_end_cpu_ms_per_click",
            "reference_cpu_ms_per_op",
            "ms",
        ),
        ("redirects/s sustained (bare 302 app)", "rps", "reference_rps", "/s"),
        (
            "clicks taken in/s (redirect/s, same phase)",
            "attribution_clicks_per_s",
            "through_rps",
            "/s",
        ),
        ("clicks not taken in when the load stopped", "attribution_lag_at_end", None, ""),
        (
            "p99 at half load (bare app, same client)",
            "half_load_p99_ms",
            "reference_half_load_p99_ms",
            "ms",
        ),
    ],
    "conversions": [
        ("CPU per conversion (bare ASGI POST)", "cpu_ms_per_op", "reference_cpu_ms_per_op", "ms"),
        (
            "conversions/s to Kafka (bare app's POSTs/s)",
            "conversions_per_s",
            "reference_http_per_s",
            "/s",
        ),
        ("HTTP p99 (bare app's)", "http_p99_ms", "reference_http_p99_ms", "ms"),
    ],
    "webhooks": [
        ("CPU per delivery (raw httpx POST)", "cpu_ms_per_op", "reference_cpu_ms_per_op", "ms"),
        ("deliveries/s (raw httpx POSTs/s)", "deliveries_per_s_healthy", "reference_rps", "/s"),
        ("p99 lag, 10 % hanging (none hanging)", "p99_lag_ms_hang", "p99_lag_ms_healthy", "ms"),
    ],
    "ledger": [
        ("CPU per transfer (raw one-row insert)", "cpu_ms_per_op", "reference_cpu_ms_per_op", "ms"),
        ("transfers/s (raw inserts/s)", "transfers_per_s", "reference_rows_per_s", "/s"),
    ],
    "time_to_reward": [
        (
            "CPU per purchase to reward (bare ASGI POST)",
            "cpu_ms_per_op",
            "reference_cpu_ms_per_op",
            "ms",
        ),
        ("purchase answered -> balance, p50", "balance_p50_ms", None, "ms"),
        ("purchase answered -> balance, p99 (goal < 250)", "balance_p99_ms", None, "ms"),
        ("purchase answered -> signed webhook, p50", "webhook_p50_ms", None, "ms"),
        ("purchase answered -> signed webhook, p99 (goal < 500)", "webhook_p99_ms", None, "ms"),
        ("purchases/s offered", "rate", None, "/s"),
    ],
    "advocate": [
        ("CPU per GET /v1/me (bare ASGI GET)", "cpu_ms_per_op", "reference_cpu_ms_per_op", "ms"),
        ("GET /v1/me/s at saturation (bare ASGI app)", "rps", "reference_rps", "/s"),
        ("/v1/me p99 at saturation (bare app's)", "p99_ms", "reference_p99_ms", "ms"),
        ("/v1/me p99 at half load (goal < 20)", "half_load_p99_ms", None, "ms"),
    ],
    "analytics": [
        ("events folded/s (raw INSERTs/s)", "fold_events_per_s", "reference_events_per_s", "/s"),
        ("funnel query p99 while folding", "funnel_p99_ms", None, "ms"),
        ("rank of 100,000 p99 (SELECT by key)", "rank_p99_ms", "reference_pk_p99_ms", "ms"),
    ],
}
# Sizing: which per-process breakdown of CPU per operation each operation is sized from.
SIZING_FROM = {
    "redirect": (
        "redirects/s, click taken in by attribution",
        "end_to_end_cpu_ms_per_click_by_process",
    ),
    "conversions": ("conversions/s", "cpu_ms_per_op_by_process"),
    "webhooks": ("webhook deliveries/s", "cpu_ms_per_op_by_process"),
    "ledger": ("ledger transfers/s (batches of 100)", "cpu_ms_per_op_by_process"),
    # the last time_to_reward line of a run: the rate at half of the conversions saturation
    "time_to_reward": (
        "purchases/s to reward and webhook, all four services",
        "cpu_ms_per_op_by_process",
    ),
}


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 10:
        return f"{value:.3g}"
    if isinstance(value, (int, float)):
        return f"{value:,.0f}"
    return str(value)


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| bench | date (UTC) | machine | load avg (1 min) | figure | value | reference | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        m = r.get("machine", {})
        machine = f"{m.get('cores')} cores, {m.get('memory_gib')} GiB, {m.get('cpu_model')}"
        load = "-".join(str(x) for x in r.get("load_avg_1m", []))
        profile = " (quick)" if r.get("quick") else ""
        if not r.get("ok", True):
            lines.append(
                f"| {r['bench']}{profile} | {r.get('date')} | {machine} | {load} | FAILED | "
                "- | - | - |"
            )
            continue
        rows = FIGURES.get(r["bench"]) or [
            ("CPU per operation", "cpu_ms_per_op", "reference_cpu_ms_per_op", "ms")
        ]
        for i, (label, field, ref, unit) in enumerate(rows):
            value, reference = r.get(field), r.get(ref) if ref else None
            ratio = (
                f"{value / reference:.2f}"
                if isinstance(value, (int, float))
                and isinstance(reference, (int, float))
                and reference
                else "-"
            )
            head = (
                f"| {r['bench']}{profile} | {r.get('date')} | {machine} | {load} "
                if i == 0
                else "| | | | "
            )
            lines.append(
                f"{head}| {label} | {_num(value)} {unit} | {_num(reference)} {unit if ref else ''}"
                f" | {ratio} |".replace("  |", " |")
            )
    return "\n".join(lines)


def sizing(results: list[dict[str, Any]]) -> str:
    """1 ms of CPU per operation at 1,000 operations/s is one core: the cores per 1,000/s of
    each process are its CPU ms per operation."""
    by = {r["bench"]: r for r in results if r.get("ok", True)}
    parts: list[str] = []
    rows = []
    for bench, (label, field) in SIZING_FROM.items():
        split = by.get(bench, {}).get(field)
        if not split:
            continue
        # the redirect's wrk is its load client
        split = {("load_client" if k == "load_generator" else k): v for k, v in split.items()}
        rows.append((label, split))
        parts += [k for k in split if k not in parts and k != "total"]
    if not rows:
        return "(no figures yet: `make bench`, then `make bench-table`)"
    lines = [
        "| per 1,000/s of | " + " | ".join(p.replace("_", " ") for p in parts) + " | total |",
        "| --- | " + " | ".join("---" for _ in parts) + " | --- |",
    ]
    for label, split in rows:
        lines.append(
            f"| {label} | "
            + " | ".join(f"{split[p]:.2f}" if p in split else "-" for p in parts)
            + f" | {split.get('total', 0):.2f} |"
        )
    return "\n".join(lines)


def replace_between(text: str, markers: tuple[str, str], body: str) -> str:
    start, end = markers
    if start not in text or end not in text:
        raise SystemExit(f"markers {start} ... {end} missing from the doc")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument("--doc", type=Path, default=HERE.parent / "docs" / "performance.md")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    doc = args.doc.read_text()
    new = replace_between(doc, TABLE, table(results))
    new = replace_between(new, SIZING, sizing(results))
    if args.check:
        sys.exit(0 if new == doc else 1)
    args.doc.write_text(new)
    print(f"rendered {args.results} into {args.doc}")


if __name__ == "__main__":
    main()

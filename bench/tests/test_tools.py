"""The benches' measuring tools: CPU per operation from /proc, and the table rendered from
bench/results.json. Run: uv run --frozen pytest -q bench/tests (not in the default testpaths:
the benches themselves are run by `make bench`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import render_table  # noqa: E402
from _common import cpu  # noqa: E402


def test_per_op_divides_each_part_and_sums_them() -> None:
    got = cpu.per_op({"a": 1.0, "b": 2.0}, {"a": 1.5, "b": 2.25}, 250)
    assert got == {"a": 2.0, "b": 1.0, "total": 3.0}
    fields = cpu.cost_fields(got, {"x": 0.5, "total": 0.5})
    assert (fields["cpu_ms_per_op"], fields["reference_cpu_ms_per_op"], fields["cpu_ratio"]) == (
        3.0,
        0.5,
        6.0,
    )
    assert cpu.cost_fields(got, {"total": 0.0})["cpu_ratio"] is None


def test_listening_pid_and_tree_find_a_child_that_burns_cpu() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert cpu.listening_pid(s.getsockname()[1]) == os.getpid()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\n"
            "while time.process_time() - t < 0.3: pass\ntime.sleep(30)",
        ]
    )
    try:
        assert child.pid in cpu.tree(os.getpid())
        meter = cpu.Meter.of(client=False, child=child.pid)
        before = meter.snapshot()
        time.sleep(1.0)
        used = meter.snapshot()["child"] - before["child"]
        assert used > 0.1, used
    finally:
        child.kill()
        child.wait()


def test_machine_and_client_parts() -> None:
    m = cpu.machine()
    assert m["cores"] and m["memory_gib"] and m["cpu_model"]
    snap = cpu.Meter({}, client_name="me").snapshot()
    assert set(snap) == {"me"} and snap["me"] > 0
    assert cpu.port_of("127.0.0.1:29092,other:1", 9092) == 29092
    assert cpu.port_of("postgresql://u@h:5433/db", 5432) == 5433


RESULTS = [
    {
        "bench": "ledger",
        "ok": True,
        "quick": True,
        "date": "2026-12-02T11:00:00Z",
        "machine": {"cores": 2, "memory_gib": 23.5, "cpu_model": "Xeon"},
        "load_avg_1m": [7.1, 7.2],
        "cpu_ms_per_op": 0.087,
        "reference_cpu_ms_per_op": 0.07,
        "cpu_ratio": 1.24,
        "cpu_ms_per_op_by_process": {"postgres": 0.03, "reward_service": 0.05, "total": 0.08},
        "transfers_per_s": 7000,
        "reference_rows_per_s": 1750,
    },
    {"bench": "webhooks", "ok": False, "date": "2026-12-02T11:01:00Z", "machine": {}},
]


def test_table_puts_each_figure_beside_its_reference_and_ratio(tmp_path: Path) -> None:
    table = render_table.table(RESULTS)
    assert "| ledger (quick) | 2026-12-02T11:00:00Z | 2 cores, 23.5 GiB, Xeon | 7.1-7.2 |" in table
    assert "| transfers/s (raw inserts/s) | 7,000 /s | 1,750 /s | 4.00 |" in table
    assert "| webhooks | 2026-12-02T11:01:00Z" in table and "FAILED" in table
    sizing = render_table.sizing(RESULTS)
    assert "| ledger transfers/s (batches of 100) | 0.03 | 0.05 | 0.08 |" in sizing

    results, doc = tmp_path / "results.json", tmp_path / "performance.md"
    results.write_text(json.dumps(RESULTS))
    doc.write_text(
        "intro\n" + "\n".join(render_table.TABLE) + "\nmiddle\n" + "\n".join(render_table.SIZING)
    )
    run = [sys.executable, str(BENCH / "render_table.py"), "--results", str(results)]
    check = [*run, "--doc", str(doc), "--check"]
    assert subprocess.run(check, check=False).returncode == 1  # noqa: S603
    subprocess.run([*run, "--doc", str(doc)], check=True)  # noqa: S603
    assert subprocess.run(check, check=False).returncode == 0  # noqa: S603
    text = doc.read_text()
    assert text.startswith("intro\n<!-- bench-table:start -->\n| bench |") and "middle" in text


@pytest.mark.parametrize(
    "name", ["redirect", "conversions", "webhooks", "ledger", "time_to_reward"]
)
def test_every_bench_is_run_by_run_all_and_offers_quick(name: str) -> None:
    import run_all

    assert name in run_all.BENCHES
    assert "--quick" in (BENCH / f"{name}.py").read_text()


def test_the_balance_watcher_looks_up_a_bounded_number_per_second() -> None:
    import time_to_reward

    assert time_to_reward.poll_interval(0) == time_to_reward.POLL_MIN_S
    assert time_to_reward.poll_interval(50) == time_to_reward.POLL_MIN_S
    for waiting in (1, 100, 101, 5_000, 100_000):
        per_s = waiting / time_to_reward.poll_interval(waiting)
        assert per_s <= time_to_reward.POLL_LOOKUPS_PER_S
    # a backlog of 4,000 at 200/s is 20 s old: read every 0.4 s, an error of 2 % at most
    assert time_to_reward.poll_interval(4_000) == 0.4

"""The benchmark suite runs end to end: ``python -m bench --quick`` measures every scenario.

Only that it ran and produced numbers is checked, never how fast anything was: speed is
for docs/performance.md, not for a test on a shared CI machine.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "burst",
    "steady",
    "loop_health",
    "api",
    "persistence",
    "store_outage",
    "scale",
    "failover",
}

if os.environ.get("CI") != "true":  # in CI the peers are installed, or this must fail
    pytest.importorskip("flask_apscheduler", reason="the bench extra is not installed")
    pytest.importorskip("quart_tasks", reason="the bench extra is not installed")


@pytest.mark.timeout(360)
def test_quick_run_measures_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=340,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())

    assert results["machine"]["cores"]
    assert set(results["scenarios"]) == SCENARIOS
    for name, scenario in results["scenarios"].items():
        for table in [scenario, *scenario["tables"]]:  # a scenario may have more tables
            measured = [row for row in table["rows"] if row["available"]]
            assert measured, f"{name}: no row was measured in {table['title']!r}"
            for row in measured:
                assert row["rounds"], f"{name}/{row['impl']}: no rounds"
                numbers = [v for v in row["median"].values() if v is not None]
                assert numbers, f"{name}/{row['impl']}: no figures"
                assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers)
            assert any(row["impl"].startswith("quart_sched") for row in measured), name
        assert "### " in proc.stdout  # the tables were printed
    # Each HTTP row answered without errors: a broken server must not pass as "slow".
    for name in ("steady", "api"):
        for row in results["scenarios"][name]["rows"]:
            if row["available"]:
                errors = row["median"].get("errors", row["median"].get("http_errors"))
                assert errors == 0, f"{name}/{row['group']}/{row['impl']}: HTTP errors"
    # Failover: each fire ran at most once, whatever the timings were.
    for row in results["scenarios"]["failover"]["rows"]:
        if row["available"]:
            assert row["median"]["duplicates"] == 0, f"failover/{row['group']}: duplicates"

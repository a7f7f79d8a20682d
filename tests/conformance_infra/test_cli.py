"""`polybus conformance` certifies a backend end to end and writes the matrix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_conformance_command_runs_the_suite_and_writes_the_matrix(tmp_path: Path) -> None:
    report = tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "polybus.cli", "conformance", "memory", "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads((report / "conformance.json").read_text())
    outcomes = {t["name"]: t["results"]["memory"]["outcome"] for t in data["tests"]}
    assert outcomes["test_fan_out"] == "passed"
    assert outcomes["test_broker_dedup"] == "skipped"


def test_unknown_backend_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "polybus.cli", "conformance", "nosuchbroker"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "nosuchbroker" in done.stdout + done.stderr

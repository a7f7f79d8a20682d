"""The guarantee matrix: what a run writes, and the README block made from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from polybus_conformance import report

DATA = {
    "generated_at": "2025-01-01T00:00:00+00:00",
    "backends": {"memory": {"flavour": "memory", "origin": "builtin", "url": "memory://"}},
    "tests": [
        {
            "name": "test_a",
            "description": "1 round trip",
            "results": {"memory": {"outcome": "passed", "reason": ""}},
        },
        {
            "name": "test_b",
            "description": "13 dedup",
            "results": {
                "memory": {"outcome": "skipped", "reason": "backend lacks capability: x|y"}
            },
        },
        {
            "name": "test_c",
            "description": "9 delay",
            "results": {"memory": {"outcome": "xfailed", "reason": "tansu: defect"}},
        },
    ],
}


def test_markdown_has_a_cell_per_result() -> None:
    text = report.markdown(DATA)
    assert "| guarantee | memory |" in text
    assert "✅ passed" in text
    assert "backend lacks capability: x\\|y" in text, "pipes in reasons must be escaped"
    assert "expected failure: tansu: defect" in text
    assert "1 passed, 0 failed, 1 skipped, 1 expected failure" in text


def test_readme_block_is_replaced(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold table\n{report.END}\nrest\n")
    report.update_readme(readme, DATA)
    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith("intro\n")
    assert text.endswith(f"{report.END}\nrest\n")
    assert "`test_b` 13 dedup" in text


def test_readme_without_markers_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="lacks the markers"):
        report.update_readme(readme, DATA)


@pytest.mark.timeout(120)
def test_a_run_writes_the_matrix(tmp_path: Path) -> None:
    """The plugin, run on memory://, records passes and capability skips with reasons."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "polybus_conformance.plugin",
            "--pyargs",
            "polybus_conformance.suite",
            "--polybus-backend=memory",
            f"--polybus-report={tmp_path}",
            "-k",
            "round_trip_fields or broker_dedup",
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "conformance.json").read_text())
    cells = {t["name"]: t["results"]["memory"] for t in data["tests"]}
    assert cells["test_round_trip_fields"] == {"outcome": "passed", "reason": ""}
    assert cells["test_broker_dedup"] == {
        "outcome": "skipped",
        "reason": "backend lacks capability: broker_dedup",
    }
    assert data["backends"]["memory"]["origin"] == "builtin", data
    assert (tmp_path / "conformance.md").read_text().startswith("# polybus conformance")


@pytest.mark.timeout(120)
def test_a_required_backend_that_cannot_be_provided_fails(tmp_path: Path) -> None:
    """POLYBUS_REQUIRE turns 'no broker' from a skip into a failure."""
    env = {
        "PATH": str(tmp_path),  # no broker program can be found
        "POLYBUS_REQUIRE": "nats",
        "HOME": str(tmp_path),
    }
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        "polybus_conformance.plugin",
        "--pyargs",
        "polybus_conformance.suite",
        "--polybus-backend=nats",
        f"--polybus-report={tmp_path}",
        "-k",
        "round_trip_fields",
        "-q",
    ]
    code = (
        "import sys, pytest\n"
        "import polybus_conformance.provisioning as p\n"
        "from polybus_conformance.provisioning.nats import NatsLauncher\n"
        "class Missing(NatsLauncher):\n"
        "    def find(self): return None\n"
        "p.LAUNCHERS['nats'] = Missing()\n"
        "p.containers.docker_answers = lambda timeout=2.0: False\n"
        f"sys.exit(pytest.main({argv[3:]!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=110,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads((tmp_path / "conformance.json").read_text())
    cell = data["tests"][0]["results"]["nats"]
    assert cell["outcome"] == "failed"
    assert "nats is required (POLYBUS_REQUIRE)" in cell["reason"]

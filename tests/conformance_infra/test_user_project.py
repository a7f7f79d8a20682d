"""Installing polybus leaves a user's own test runs alone: the conformance plugin is
loaded only when a project selects it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONFTEST = """
import pytest

@pytest.fixture
def bus():
    return "my own bus"

@pytest.fixture
def names():
    return ["my", "names"]
"""

TESTS = """
def test_my_bus(bus):
    assert bus == "my own bus"

def test_my_names(names):
    assert names == ["my", "names"]
"""


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # the user's own environment: none of this run's pytest or polybus settings (CI sets
    # PYTEST_ADDOPTS for its own reports; POLYBUS_* select brokers)
    env = {
        name: value
        for name, value in os.environ.items()
        if name != "PYTEST_ADDOPTS" and not name.startswith("POLYBUS_")
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_plain_project_runs_untouched(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_mine.py").write_text(TESTS)
    done = _pytest(tmp_path, "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert "[memory]" not in done.stdout, "the user's tests were parametrized by polybus"
    assert not (tmp_path / "reports").exists(), "polybus wrote a report into the project"
    # no polybus option exists unless the plugin is selected
    refused = _pytest(tmp_path, "--polybus-backend=memory")
    assert refused.returncode != 0
    assert "unrecognized arguments: --polybus-backend" in refused.stderr


def test_selecting_the_plugin_gives_namespaced_fixtures_only(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_mine.py").write_text(TESTS)
    done = _pytest(
        tmp_path,
        "-q",
        "-p",
        "polybus_conformance.plugin",
        "--polybus-report",
        str(tmp_path / "out"),
        "--fixtures",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "polybus_bus_factory" in done.stdout
    plugin_fixtures = [
        line.split()[0]
        for line in done.stdout.splitlines()
        if line[:1].isalpha() and "polybus_conformance" in line  # "name -- file:line"
    ]
    assert plugin_fixtures, done.stdout
    assert all(name.startswith("polybus_") for name in plugin_fixtures), plugin_fixtures

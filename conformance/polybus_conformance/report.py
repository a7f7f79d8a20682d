"""The guarantee matrix: backend x test, each cell passed / failed / skipped with its
reason / expected failure with the named broker defect.

A run of the suite writes ``conformance.json`` and ``conformance.md``; the README's
matrix is regenerated from the JSON (never typed by hand)::

    python -m polybus_conformance.report --json reports/conformance.json --readme README.md
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

START = "<!-- conformance-matrix:start -->"
END = "<!-- conformance-matrix:end -->"
OUTCOMES = ("passed", "failed", "skipped", "xfailed")
SYMBOL = {"passed": "✅", "failed": "❌", "skipped": "⏭️", "xfailed": "⚠️"}
LABEL = {
    "passed": "passed",
    "failed": "failed",
    "skipped": "skipped",
    "xfailed": "expected failure",
}


@dataclass(slots=True)
class Cell:
    outcome: str
    reason: str = ""


@dataclass(slots=True)
class Row:
    name: str
    description: str
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass(slots=True)
class Matrix:
    """Results accumulated during a run, in catalogue (collection) order."""

    backends: dict[str, dict[str, str]] = field(default_factory=dict)
    rows: dict[str, Row] = field(default_factory=dict)

    def add_test(self, name: str, description: str) -> None:
        """Register a collected test (it becomes a row once it has a result)."""
        self.rows.setdefault(name, Row(name, description))

    def record(self, name: str, backend: str, report: pytest.TestReport) -> None:
        """Fold one setup/call/teardown report into the cell of ``name`` x ``backend``."""
        found = _outcome(report)
        if found is None:
            return
        row = self.rows.setdefault(name, Row(name, ""))
        previous = row.cells.get(backend)
        if previous is not None and previous.outcome == "failed":
            return  # the first failure is the informative one
        row.cells[backend] = found

    def ordered(self) -> list[Row]:
        """Rows that ran (deselected tests have no cells), in catalogue order: by the
        number their description starts with."""
        ran = [row for row in self.rows.values() if row.cells]
        return sorted(ran, key=lambda row: _catalogue_number(row.description))

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "backends": self.backends,
            "tests": [
                {
                    "name": row.name,
                    "description": row.description,
                    "results": {
                        b: {"outcome": c.outcome, "reason": c.reason} for b, c in row.cells.items()
                    },
                }
                for row in self.ordered()
            ],
        }

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        data = self.to_json()
        json_path = directory / "conformance.json"
        json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        md_path = directory / "conformance.md"
        md_path.write_text("# polybus conformance\n\n" + markdown(data) + "\n")
        return json_path, md_path


def _catalogue_number(description: str) -> int:
    head = description.split(" ", 1)[0]
    return int(head) if head.isdigit() else 1_000


def _outcome(report: pytest.TestReport) -> Cell | None:
    wasxfail = getattr(report, "wasxfail", None)
    if report.skipped:
        if wasxfail is not None:
            return Cell("xfailed", str(wasxfail))
        return Cell("skipped", _skip_reason(report))
    if report.failed:
        where = "" if report.when == "call" else f"{report.when}: "
        return Cell("failed", where + _failure(report))
    if report.when == "call":
        return Cell("passed")
    return None


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        text = str(longrepr[2])
        return text.removeprefix("Skipped: ")
    return str(longrepr)


def _failure(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or str(report.longrepr)
    first = text.strip().splitlines()[0] if text.strip() else "failed"
    return first if len(first) <= 300 else first[:297] + "..."


def _cell_text(cell: dict[str, str] | None) -> str:
    if cell is None:
        return "not run"
    outcome = cell["outcome"]
    text = f"{SYMBOL.get(outcome, '')} {LABEL.get(outcome, outcome)}"
    if cell.get("reason"):
        text += f": {cell['reason']}"
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(data: dict[str, Any]) -> str:
    """The matrix as a Markdown table (plus a legend line naming each backend's broker)."""
    names = list(data["backends"]) or sorted({b for t in data["tests"] for b in t["results"]})
    lines = [
        "| guarantee | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for test in data["tests"]:
        label = f"`{test['name']}`"
        if test["description"]:
            label += f" {test['description']}"
        cells = [_cell_text(test["results"].get(b)) for b in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    brokers = ", ".join(
        f"{b}: {info.get('flavour', '?')} ({info.get('origin', '?')})"
        for b, info in data["backends"].items()
    )
    totals = {o: 0 for o in OUTCOMES}
    for test in data["tests"]:
        for cell in test["results"].values():
            totals[cell["outcome"]] = totals.get(cell["outcome"], 0) + 1
    summary = ", ".join(f"{n} {LABEL[o]}" for o, n in totals.items())
    lines += ["", f"Brokers: {brokers}. Totals: {summary}. Generated {data['generated_at']}."]
    return "\n".join(lines)


def update_readme(readme: Path, data: dict[str, Any]) -> None:
    """Replace the text between the matrix markers of ``readme`` with the matrix."""
    text = readme.read_text()
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise ValueError(f"{readme} lacks the markers {START} ... {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{markdown(data)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m polybus_conformance.report",
        description="Print the conformance matrix, or regenerate the README's matrix block.",
    )
    parser.add_argument("--json", type=Path, default=Path("reports/conformance.json"))
    parser.add_argument("--readme", type=Path, help="README to update between the markers")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"cannot read {args.json}: {exc}", file=sys.stderr)
        return 2
    if args.readme is None:
        print(markdown(data))
        return 0
    try:
        update_readme(args.readme, data)
    except (OSError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"updated the conformance matrix in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The generated backend table says exactly what each adapter declares."""

from __future__ import annotations

from pathlib import Path

import pytest

import polybus
from polybus_conformance import capability_table


def test_table_matches_declared_capabilities() -> None:
    text = capability_table.table()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    kafka = polybus.connect("kafka://127.0.0.1:9092").capabilities
    header = [c.strip() for c in text.splitlines()[0].split("|")[2:-1]]
    column = header.index("kafka")
    cells = [c.strip() for c in rows["`replay`"].split("|")[2:-1]]
    assert cells[column] == ("yes" if kafka.replay else "no")
    max_size = [c.strip() for c in rows["`max_message_size`"].split("|")[2:-1]]
    assert max_size[column] == str(kafka.max_message_size)


def test_update_readme_replaces_only_the_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{capability_table.START}\nold\n{capability_table.END}\noutro\n")
    capability_table.update_readme(readme)
    text = readme.read_text()
    assert text.startswith("intro\n")
    assert text.endswith("outro\n")
    assert "old" not in text
    assert "| `fan_out` |" in text


def test_update_readme_without_markers_fails(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        capability_table.update_readme(readme)

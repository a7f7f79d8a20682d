"""The README's backend table, generated from each adapter's declared ``Capabilities``.

The conformance matrix shows what a run proved; this table shows what each adapter
claims (the suite's skips follow from it). Both are generated, never typed by hand::

    python -m polybus_conformance.capability_table --readme README.md
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import polybus
from polybus.capabilities import Capabilities

START = "<!-- backends:start -->"
END = "<!-- backends:end -->"

# One example URL per configuration whose capabilities differ; from_url does no I/O.
CONFIGURATIONS: dict[str, str] = {
    "memory": "memory://",
    "kafka": "kafka://127.0.0.1:9092",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "nats": "nats://127.0.0.1:4222",
    "sqs": "sqs://?region=us-east-1",
    "sqs `fifo=true`": "sqs://?region=us-east-1&fifo=true",
    "pubsub": "pubsub://project",
    "redis": "redis://127.0.0.1:6379",
    "redis `require_persistence=true`": "redis://127.0.0.1:6379?require_persistence=true",
}


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, polybus.Ordering):
        return value.value.replace("_", " ")
    if value is None:
        return "-"
    return str(value)


def table() -> str:
    """The Markdown table: one column per configuration, one row per capability."""
    caps: dict[str, Capabilities] = {
        name: polybus.connect(url).capabilities for name, url in CONFIGURATIONS.items()
    }
    names = list(caps)
    lines = [
        "| capability | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for field in fields(Capabilities):
        row = [_cell(getattr(caps[n], field.name)) for n in names]
        lines.append(f"| `{field.name}` | " + " | ".join(row) + " |")
    return "\n".join(lines)


def update_readme(readme: Path) -> None:
    """Replace the text between the backend-table markers of ``readme``."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} lacks the markers {START} ... {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table()}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m polybus_conformance.capability_table")
    parser.add_argument("--readme", type=Path, help="README to update between the markers")
    args = parser.parse_args(argv)
    if args.readme is None:
        print(table())
    else:
        update_readme(args.readme)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

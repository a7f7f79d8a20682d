"""The ``polybus`` command line: ``bench``, ``conformance``, ``brokers``.

Each subcommand lives with the code it drives and registers its own arguments:
``polybus.bench`` for benchmarks, ``polybus_conformance`` for the suite and the broker
launchers. This module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module with ``add_arguments(parser)`` and ``run(args) -> int``
COMMANDS = {
    "bench": ("polybus.bench.cli", "compare the SDK with the raw client, side by side"),
    "conformance": ("polybus_conformance.cli", "run the conformance suite against a backend"),
    "brokers": ("polybus_conformance.brokers_cli", "start or stop local brokers for development"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polybus", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            sub.set_defaults(_unavailable=f"{name} is unavailable: {exc}")
            continue
        module.add_arguments(sub)
        modules[name] = module
    args = parser.parse_args(argv)
    unavailable = getattr(args, "_unavailable", None)
    if unavailable:
        print(f"polybus: {unavailable}", file=sys.stderr)
        return 2
    return int(modules[args.command].run(args))


if __name__ == "__main__":
    sys.exit(main())

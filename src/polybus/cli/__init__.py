"""The ``polybus`` command line (click): run a service, operate brokers, certify them.

Each command lives in its own module here; ``bench``, ``conformance`` and ``brokers``
keep their argument parsers beside the code they drive (``polybus.bench``,
``polybus_conformance``) and are reached through this group.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from .. import __version__
from .ops import COMMANDS as OPERATOR_COMMANDS
from .run import run

__all__ = ["cli", "main"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="polybus", message="%(prog)s %(version)s")
def cli() -> None:
    """One producer/consumer API over Kafka, RabbitMQ, SQS/SNS, Pub/Sub and NATS.

    Every command that talks to a broker takes --url; without it the URL comes from
    POLYBUS_URL, then polybus.toml or [tool.polybus] in pyproject.toml, else memory://.
    """


cli.add_command(run)
for _command in OPERATOR_COMMANDS:
    cli.add_command(_command)


def _argparse_command(name: str, module_name: str, summary: str) -> click.Command:
    """A command whose arguments an argparse parser in ``module_name`` reads."""

    @click.command(
        name,
        help=summary + " (run with -h for its options)",
        context_settings={"ignore_unknown_options": True, "help_option_names": []},
        add_help_option=False,
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        import argparse

        try:
            module: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise click.ClickException(f"{name} is unavailable: {exc}") from exc
        parser = argparse.ArgumentParser(prog=f"polybus {name}", description=summary)
        module.add_arguments(parser)
        # argparse itself exits for -h and usage errors (code 2)
        raise click.exceptions.Exit(int(module.run(parser.parse_args(list(args)))))

    return command


for _name, _module, _summary in (
    ("bench", "polybus.bench.cli", "compare the SDK with the raw client, side by side"),
    ("conformance", "polybus_conformance.cli", "run the conformance suite against a backend"),
    ("brokers", "polybus_conformance.brokers_cli", "start or stop local brokers for development"),
):
    cli.add_command(_argparse_command(_name, _module, _summary))


def main(argv: list[str] | None = None) -> int:
    """The console script: exit code 0 on success, non-zero on any failure."""
    try:
        code = cli.main(args=argv, prog_name="polybus", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    return code if isinstance(code, int) else 0

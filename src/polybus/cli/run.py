"""``polybus run module:worker``: run a Worker from an import path, like a service.

Logging is set up, SIGTERM and SIGINT stop it gracefully (fetching stops, in-flight
messages finish and settle), and the exit code is non-zero when it ends with an error.
``--url`` sets ``POLYBUS_URL`` before the module is imported, so it applies to a module
that connects with ``polybus.connect()``. ``--reload`` restarts it whenever a Python
file under the working directory changes (development only; needs ``watchfiles``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from typing import Any

import click

from .._worker import Worker
from ..errors import ConfigError, PolybusError

log = logging.getLogger("polybus.cli")


def load_worker(target: str) -> Worker:
    """The Worker at ``module:attribute`` (an attribute that is a Worker, or a function
    that returns one)."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise click.BadParameter(f"expected module:attribute, got {target!r}", param_hint="TARGET")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the application's own modules, as python -m does
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="TARGET"
        ) from exc
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise click.BadParameter(
                f"{module_name!r} has no attribute {attribute!r}", param_hint="TARGET"
            ) from None
    if not isinstance(found, Worker) and callable(found):
        found = found()
    if not isinstance(found, Worker):
        raise click.BadParameter(
            f"{target} is a {type(found).__name__}, not a polybus.Worker", param_hint="TARGET"
        )
    return found


async def serve(worker: Worker) -> None:
    """Open the worker's bus if needed, run until a signal or stop, close what it opened."""
    bus = worker.bus
    opened = not bus.is_open
    if opened:
        await bus.open()
    try:
        await worker.run()
    finally:
        if opened:
            await bus.close()


def _run_once(target: str, log_level: str) -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    worker = load_worker(target)
    log.info("running %s on %s", target, worker.bus.url)
    try:
        asyncio.run(serve(worker))
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from exc
    except PolybusError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    log.info("stopped %s", target)


@click.command()
@click.argument("target")
@click.option("--url", help="broker URL for the worker's polybus.connect() (sets POLYBUS_URL)")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option("--reload", is_flag=True, help="restart on changes to .py files (development)")
def run(target: str, url: str | None, log_level: str, reload: bool) -> None:
    """Run the Worker at TARGET (module:attribute) until SIGTERM or SIGINT.

    Example: polybus run examples.order_service:worker --url amqp://guest:guest@localhost/
    """
    if url:
        os.environ["POLYBUS_URL"] = url
    if not reload:
        _run_once(target, log_level)
        return
    try:
        import watchfiles
    except ImportError as exc:
        raise click.ClickException("--reload needs watchfiles: pip install 'polybus[dev]'") from exc
    click.echo(f"polybus: running {target}, restarting on changes under {os.getcwd()}", err=True)
    watchfiles.run_process(
        os.getcwd(),
        target=_run_once,
        args=(target, log_level),
        watch_filter=watchfiles.PythonFilter(),
    )

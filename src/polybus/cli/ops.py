"""Operator commands: publish, tail, dlq (list, show, replay, purge), lag.

Every command takes ``--url``; without it the URL comes from ``POLYBUS_URL``, then
``polybus.toml`` / ``[tool.polybus]``, else ``memory://``, as for ``polybus.connect()``.
Output goes through rich; a URL is always shown redacted.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

import polybus
from polybus import headers as h

from ..errors import ConfigError, PolybusError

T = TypeVar("T")

out = Console()
err = Console(stderr=True)

url_option = click.option(
    "--url", help="broker URL (default: POLYBUS_URL, polybus.toml, else memory://)"
)
group_option = click.option("--group", "-g", required=True, help="the group")


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(work())
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from exc
    except PolybusError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None


def _body_text(msg: polybus.Message, limit: int = 200) -> str:
    try:
        text = msg.body.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(msg.body)} bytes>"
    return text if len(text) <= limit else text[:limit] + "..."


def _parse_headers(values: tuple[str, ...]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--header")
        headers[name] = value
    return headers


# -- publish --------------------------------------------------------------------------


@click.command()
@click.argument("topic")
@click.argument("body", required=False)
@click.option("--key", "-k", help="the message key")
@click.option("--header", "-H", "header", multiple=True, help="NAME=VALUE (repeatable)")
@click.option("--id", "message_id", help="the message id (default: a fresh one)")
@click.option("--json", "as_json", is_flag=True, help="BODY is JSON: publish it as JSON")
@url_option
def publish(
    topic: str,
    body: str | None,
    key: str | None,
    header: tuple[str, ...],
    message_id: str | None,
    as_json: bool,
    url: str | None,
) -> None:
    """Publish one message to TOPIC; BODY from the argument, else from stdin.

    Prints the message id once the broker confirmed it.
    """
    data: Any = sys.stdin.buffer.read() if body is None or body == "-" else body.encode()
    if as_json:
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="BODY") from exc
    headers = _parse_headers(header)

    async def work() -> str:
        async with polybus.connect(url) as bus:
            return await bus.publish(topic, data, key=key, headers=headers or None, id=message_id)

    click.echo(_run(work))


# -- tail -----------------------------------------------------------------------------


@click.command()
@click.argument("topic")
@click.option("--count", "-n", type=click.IntRange(min=1), help="stop after N messages")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per message")
@url_option
def tail(topic: str, count: int | None, as_json: bool, url: str | None) -> None:
    """Follow new messages on TOPIC without taking any group's: a temporary group of
    its own, removed on exit (Ctrl-C)."""

    async def work() -> None:
        async with polybus.connect(url) as bus:
            seen = 0
            async with bus.tail(topic) as sub:
                # on stderr, once the group exists: what is published from now on shows
                err.print(f"tailing {topic!r} on {bus.url} (Ctrl-C to stop)", highlight=False)
                async for msg in sub:
                    _show(msg, as_json)
                    seen += 1
                    if count is not None and seen >= count:
                        break

    _run(work)


def _show(msg: polybus.Message, as_json: bool) -> None:
    if as_json:
        record = {
            "id": msg.id,
            "key": msg.key,
            "headers": msg.headers,
            "content_type": msg.content_type,
            "published_at": msg.published_at.isoformat() if msg.published_at else None,
            "body": _body_text(msg, limit=1 << 20),
        }
        click.echo(json.dumps(record, ensure_ascii=False))
        return
    stamp = msg.published_at.isoformat(timespec="milliseconds") if msg.published_at else "-"
    out.print(f"[bold]{msg.id}[/bold] key={msg.key} at={stamp}", highlight=False)
    for name, value in sorted(msg.headers.items()):
        out.print(f"  {name}: {value}", highlight=False, markup=False)
    out.print(f"  {_body_text(msg)}", highlight=False, markup=False)


# -- dlq ------------------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """Dead letters of a group: list, show, replay (to that group only), purge."""


async def _read_dead(bus: polybus.Bus, topic: str, group: str) -> list[polybus.Message]:
    letters: list[polybus.Message] = []
    async with bus.dead_letters(topic, group=group, max_in_flight=10_000) as dead:
        while True:
            try:
                letters.append(await dead.get(timeout=1.0))
            except TimeoutError:
                return letters  # unsettled: they go back when the reading ends


@dlq.command("list")
@click.argument("topic")
@group_option
@url_option
def dlq_list(topic: str, group: str, url: str | None) -> None:
    """The dead letters of GROUP on TOPIC, left in place."""

    async def work() -> list[polybus.Message]:
        async with polybus.connect(url) as bus:
            return await _read_dead(bus, topic, group)

    letters = _run(work)
    table = Table(title=f"dead letters of {group} on {topic}: {len(letters)}")
    for column in ("id", "reason", "attempts", "last failure", "body"):
        table.add_column(column)
    for msg in letters:
        table.add_row(
            msg.id,
            msg.headers.get(h.DLQ_REASON, ""),
            msg.headers.get(h.DLQ_ATTEMPTS, ""),
            msg.headers.get(h.DLQ_LAST_FAILURE, ""),
            _body_text(msg, 40),
        )
    out.print(table)


@dlq.command("show")
@click.argument("topic")
@click.argument("message_id")
@group_option
@url_option
def dlq_show(topic: str, message_id: str, group: str, url: str | None) -> None:
    """One dead letter of GROUP: every header and the body."""

    async def work() -> list[polybus.Message]:
        async with polybus.connect(url) as bus:
            return await _read_dead(bus, topic, group)

    found = [m for m in _run(work) if m.id == message_id]
    if not found:
        raise click.ClickException(f"no dead letter {message_id!r} for group {group!r}")
    _show(found[0], as_json=False)


@dlq.command("replay")
@click.argument("topic")
@group_option
@click.option("--id", "ids", multiple=True, help="replay only these ids (repeatable)")
@click.option("--all", "replay_all", is_flag=True, help="replay every dead letter")
@url_option
def dlq_replay(
    topic: str, group: str, ids: tuple[str, ...], replay_all: bool, url: str | None
) -> None:
    """Send dead letters back to TOPIC for GROUP only (--id ... or --all)."""
    if not ids and not replay_all:
        raise click.UsageError("say which: --id ID (repeatable) or --all")

    async def work() -> int:
        async with polybus.connect(url) as bus:
            with err.status(f"replaying dead letters of {group} on {topic}..."):
                return await bus.replay_dead_letters(
                    topic, group=group, ids=list(ids) if ids else None
                )

    out.print(f"replayed {_run(work)} dead letters to {topic} for {group}")


@dlq.command("purge")
@click.argument("topic")
@group_option
@click.option("--id", "ids", multiple=True, help="purge only these ids (repeatable)")
@click.option("--all", "purge_all", is_flag=True, help="purge every dead letter")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@url_option
def dlq_purge(
    topic: str, group: str, ids: tuple[str, ...], purge_all: bool, yes: bool, url: str | None
) -> None:
    """Delete dead letters of GROUP for good (--id ... or --all)."""
    if not ids and not purge_all:
        raise click.UsageError("say which: --id ID (repeatable) or --all")
    if not yes:
        click.confirm(f"delete dead letters of {group} on {topic} for good?", abort=True)

    async def work() -> int:
        async with polybus.connect(url) as bus:
            return await bus.purge_dead_letters(topic, group=group, ids=list(ids) if ids else None)

    out.print(f"purged {_run(work)} dead letters of {group} on {topic}")


# -- lag ------------------------------------------------------------------------------


@click.command()
@click.argument("topic")
@group_option
@click.option("--watch", type=click.FloatRange(min=0.5), help="refresh every N seconds")
@url_option
def lag(topic: str, group: str, watch: float | None, url: str | None) -> None:
    """The backlog of GROUP on TOPIC from the broker: messages not settled, the age of
    the oldest, and the dead letters waiting ('-' where the backend cannot say)."""

    def render(row: tuple[polybus.Lag, polybus.Lag], backend: str) -> Table:
        backlog, dead = row
        table = Table(title=f"{topic} / {group} ({backend}) at {datetime.now(UTC):%H:%M:%S}")
        for column in ("backlog", "oldest age (s)", "dead letters", "oldest dead letter (s)"):
            table.add_column(column, justify="right")
        table.add_row(
            _figure(backlog.messages),
            _figure(backlog.oldest_age),
            _figure(dead.messages),
            _figure(dead.oldest_age),
        )
        return table

    async def read(bus: polybus.Bus) -> tuple[polybus.Lag, polybus.Lag]:
        return await bus.lag(topic, group), await bus.dead_letter_lag(topic, group)

    async def work() -> None:
        async with polybus.connect(url) as bus:
            if watch is None:
                out.print(render(await read(bus), bus.backend))
                return
            with Live(render(await read(bus), bus.backend), console=out) as live:
                while True:
                    await asyncio.sleep(watch)
                    live.update(render(await read(bus), bus.backend))

    _run(work)


def _figure(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


COMMANDS = [publish, tail, dlq, lag]

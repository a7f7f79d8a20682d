"""Names and declarations: a topic is a durable fanout exchange, a group a durable
queue bound to it, a group's delayed redeliveries wait in ``<queue>.delay``.

=====================  ===========================================================
topic ``T``            exchange ``<exchange_prefix>T`` (fanout, durable)
group ``G`` of ``T``   queue ``<queue_prefix>T.G`` (quorum by default, durable,
                       single active consumer by default), bound to the exchange
delivery limit         ``x-delivery-limit = max_deliveries - 1`` (RabbitMQ counts
                       redeliveries), dead-lettered to the exchange of ``T.G.dlq``
delayed redelivery     classic durable queue ``<queue>.delay``: per-message TTL,
                       dead-lettered through the default exchange back to the queue
=====================  ===========================================================

Every declaration is idempotent. A declaration that conflicts with an existing one
(another exchange type, other queue arguments) closes only a throw-away channel and
raises :class:`polybus.errors.ConfigError` naming the object and the broker's reason.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from pika import exceptions as pe

from . import _errors
from ._link import Link
from ._settings import RabbitMQSettings

log = logging.getLogger("polybus.rabbitmq")

LIMIT_ARGUMENTS = frozenset({"x-delivery-limit", "x-dead-letter-exchange"})
"""Arguments whose difference from an existing queue is tolerated: the consumer then
enforces ``max_deliveries`` itself (see :mod:`polybus_rabbitmq._consumer`)."""
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'")


@dataclass(slots=True)
class Names:
    """Object names derived from topic and group names (see the module docstring)."""

    settings: RabbitMQSettings
    limits: dict[tuple[str, str], int] = field(default_factory=dict)
    """max_deliveries of the groups this adapter declared, for dead-letter metadata."""
    queues: dict[str, tuple[str, str]] = field(default_factory=dict)

    def exchange(self, topic: str) -> str:
        return f"{self.settings.exchange_prefix}{topic}"

    def queue(self, topic: str, group: str) -> str:
        name = f"{self.settings.queue_prefix}{topic}.{group}"
        self.queues[name] = (topic, group)
        return name

    def delay_queue(self, topic: str, group: str) -> str:
        return f"{self.queue(topic, group)}.delay"

    def origin_of(self, queue: str) -> tuple[str, str] | None:
        """The (topic, group) of a group queue this adapter named, if known."""
        return self.queues.get(queue)


def _check_name(what: str, field_name: str, name: str) -> None:
    # AMQP short strings: longer names would close the channel with a frame error
    if len(name.encode("utf-8")) > 255:
        from polybus.errors import ConfigError

        raise ConfigError(field_name, f"{what} {name[:40]!r}... is longer than 255 bytes")


async def declare_exchange(link: Link, name: str) -> None:
    """Declare the durable fanout exchange ``name``; ConfigError on a conflict."""
    _check_name("exchange", "topic", name)
    chan = await link.channel()
    try:
        await chan.call(
            lambda cb: chan.native.exchange_declare(
                name, exchange_type="fanout", durable=True, callback=cb
            )
        )
    except (pe.ChannelClosed, pe.ConnectionClosed, pe.AMQPError) as exc:
        raise _errors.declare_error(exc, "topic", f"exchange {name!r}") from exc
    finally:
        await chan.close()


def group_arguments(
    settings: RabbitMQSettings, dead_letter_exchange: str, max_deliveries: int | None
) -> dict[str, Any]:
    """The queue arguments of a group queue."""
    args: dict[str, Any] = {}
    if settings.queue_type == "quorum":
        args["x-queue-type"] = "quorum"
        limit = max_deliveries if max_deliveries is not None else settings.delivery_limit
        if limit is not None:
            args["x-delivery-limit"] = limit - 1
            args["x-dead-letter-exchange"] = dead_letter_exchange
    if settings.single_active_consumer:
        args["x-single-active-consumer"] = True
    return args


async def declare_group(
    link: Link,
    exchange: str,
    queue: str,
    arguments: dict[str, Any],
    *,
    accept_existing: bool,
) -> bool:
    """Declare ``queue`` with ``arguments`` and bind it to ``exchange``; return whether
    the queue has the requested arguments (False: an existing queue used as it is).

    Only a difference in the delivery-limit arguments is tolerated (a group declared
    earlier with another limit, or none; quietly when ``accept_existing``, the caller
    asking for no limit); any other difference raises ConfigError.
    """
    _check_name("queue", "group", queue)
    chan = await link.channel()
    as_requested = True
    try:
        try:
            await chan.call(
                lambda cb: chan.native.queue_declare(
                    queue, durable=True, arguments=arguments, callback=cb
                )
            )
        except pe.ChannelClosedByBroker as exc:
            if exc.reply_code != _errors.PRECONDITION_FAILED:
                raise
            found = _INEQUIVALENT.search(exc.reply_text or "")
            if found is None or found.group(1) not in LIMIT_ARGUMENTS:
                raise
            if not accept_existing:
                log.warning(
                    "queue %s exists without the requested delivery limit (%s); "
                    "polybus enforces the limit in its consumers",
                    queue,
                    exc.reply_text,
                )
            as_requested = False
            chan = await link.channel()
            await chan.call(lambda cb: chan.native.queue_declare(queue, passive=True, callback=cb))
        await chan.call(lambda cb: chan.native.queue_bind(queue, exchange, callback=cb))
    except (pe.ChannelClosed, pe.ConnectionClosed, pe.AMQPError) as exc:
        raise _errors.declare_error(exc, "group", f"queue {queue!r}") from exc
    finally:
        await chan.close()
    return as_requested


async def declare_delay_queue(link: Link, delay_queue: str, work_queue: str) -> None:
    """The classic durable queue where delayed redeliveries wait out their TTL."""
    chan = await link.channel()
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": work_queue}
    try:
        await chan.call(
            lambda cb: chan.native.queue_declare(
                delay_queue, durable=True, arguments=arguments, callback=cb
            )
        )
    except (pe.ChannelClosed, pe.ConnectionClosed, pe.AMQPError) as exc:
        raise _errors.declare_error(exc, "group", f"delay queue {delay_queue!r}") from exc
    finally:
        await chan.close()

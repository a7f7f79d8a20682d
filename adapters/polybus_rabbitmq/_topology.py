"""Names and declarations: a topic is a durable fanout exchange, a group a durable
queue bound to it, a group's delayed redeliveries wait in ``<queue>.delay``.

=====================  ===========================================================
topic ``T``            exchange ``<exchange_prefix>T`` (fanout, durable)
group ``G`` of ``T``   queue ``<queue_prefix>T.G`` (quorum by default, durable),
                       bound to the exchange; ``x-single-active-consumer`` when
                       the group is key-ordered (the queue stores the ordering)
delayed redelivery     classic durable queue ``<queue>.delay``: per-message TTL,
                       dead-lettered through the default exchange back to the queue
=====================  ===========================================================

Names are fitted with :func:`polybus.spi.fit_name` (at most 255 UTF-8 bytes, no
reserved ``amq.`` prefix): a name that fits is used unchanged. Every declaration is
idempotent. One that conflicts with an existing one closes only a throw-away channel
and raises :class:`polybus.errors.ConfigError` naming the object and the broker's
reason.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from pika import exceptions as pe

from polybus.errors import ConfigError, PolybusError
from polybus.spi import DLQ_GROUP, GroupSpec, Ordering, fit_name

from . import _errors
from ._link import Chan, Link

log = logging.getLogger("polybus.rabbitmq")

SAC = "x-single-active-consumer"
LIMIT_ARGUMENTS = frozenset({"x-delivery-limit", "x-dead-letter-exchange"})
"""Arguments earlier polybus versions set on group queues (a native delivery limit);
an existing queue keeps them (see :func:`declare_group`)."""
_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for .*?: received (?P<got>.*?) "
    r"but current is (?P<current>.*)$",
    re.S,
)
_TYPED = re.compile(r"the value '(?P<value>.*)' of type '(?P<type>\w+)'$", re.S)
_NUMERIC = frozenset({"long", "signedint", "short", "byte", "unsignedint", "unsignedshort"})
_PRINTABLE = r"\x20-\x7e\u00a0-\U0010ffff"
_ASCII = r"\x20-\x7e"
_MAX_BYTES = 255


def amqp_name(name: str, suffix: str = "") -> str:
    """``name + suffix`` as an AMQP short string RabbitMQ accepts for a user object."""
    fitted = fit_name(
        name, allowed=_PRINTABLE, max_length=_MAX_BYTES, suffix=suffix, reserved_prefixes=("amq.",)
    )
    if len(fitted.encode("utf-8")) <= _MAX_BYTES:
        return fitted
    # too many bytes though few enough characters: fit to ASCII (1 byte each)
    return fit_name(
        name, allowed=_ASCII, max_length=_MAX_BYTES, suffix=suffix, reserved_prefixes=("amq.",)
    )


@dataclass(frozen=True, slots=True)
class Names:
    """Object names derived from topic and group names (see the module docstring)."""

    exchange_prefix: str = ""
    queue_prefix: str = ""

    def exchange(self, topic: str) -> str:
        return amqp_name(f"{self.exchange_prefix}{topic}")

    def queue(self, topic: str, group: str) -> str:
        return amqp_name(f"{self.queue_prefix}{topic}.{group}")

    def delay_queue(self, topic: str, group: str) -> str:
        return amqp_name(f"{self.queue_prefix}{topic}.{group}", suffix=".delay")


async def declare_exchange(link: Link, name: str) -> None:
    """Declare the durable fanout exchange ``name``; ConfigError on a conflict."""
    chan = await link.channel()
    try:
        await chan.call(
            lambda cb: chan.native.exchange_declare(
                name, exchange_type="fanout", durable=True, callback=cb
            )
        )
    except pe.AMQPError as exc:
        raise _errors.declare_error(exc, "topic", f"exchange {name!r}") from exc
    finally:
        await chan.close()


def group_arguments(queue_type: str, ordering: Ordering) -> dict[str, Any]:
    """The queue arguments of a group queue with ``ordering``."""
    args: dict[str, Any] = {}
    if queue_type == "quorum":
        args["x-queue-type"] = "quorum"
    if ordering is Ordering.KEY:
        args[SAC] = True
    return args


async def declare_group(
    link: Link, exchange: str, queue: str, queue_type: str, spec: GroupSpec
) -> None:
    """Declare ``queue`` for the group ``spec`` and bind it to ``exchange``.

    A queue declared by an earlier version keeps its delivery-limit arguments (they
    are adopted from the broker's answer and declared again as they are, so every
    other argument is still checked). A queue with the other single-active-consumer
    flag is the other ordering: ConfigError("ordering"), except for a dead-letter
    group (always ordering none here; earlier versions made it single-active).
    """
    args = group_arguments(queue_type, spec.ordering)
    adopted: dict[str, Any] = {}
    for _ in range(len(LIMIT_ARGUMENTS) + 2):
        try:
            await _declare_bound_queue(link, queue, {**args, **adopted}, exchange)
        except pe.ChannelClosedByBroker as exc:
            found = _adoptable(exc, spec, queue)
            if found is None:
                raise _errors.declare_error(exc, "group", f"queue {queue!r}") from exc
            adopted[found[0]] = found[1]
            continue
        except pe.AMQPError as exc:
            raise _errors.declare_error(exc, "group", f"queue {queue!r}") from exc
        if adopted:
            log.warning(
                "queue %s keeps arguments an earlier polybus version declared %s (a native "
                "delivery limit still dead-letters as a backstop; polybus dead-letters at "
                "max_deliveries itself)",
                queue,
                adopted,
            )
        return
    raise ConfigError("group", f"queue {queue!r}: its arguments could not be matched")


async def _declare_bound_queue(
    link: Link, queue: str, arguments: dict[str, Any], exchange: str
) -> None:
    chan = await link.channel()
    try:
        await chan.call(
            lambda cb: chan.native.queue_declare(
                queue, durable=True, arguments=arguments, callback=cb
            )
        )
        await chan.call(lambda cb: chan.native.queue_bind(queue, exchange, callback=cb))
    finally:
        await chan.close()


def _adoptable(
    exc: pe.ChannelClosedByBroker, spec: GroupSpec, queue: str
) -> tuple[str, Any] | None:
    """The (argument, value) an existing queue has and the new declaration may take
    over; None for any other refusal. Raises ConfigError("ordering") for the other
    ordering."""
    if exc.reply_code != _errors.PRECONDITION_FAILED:
        return None
    found = _INEQUIVALENT.search(exc.reply_text or "")
    if found is None:
        return None
    arg, current = found.group("arg"), _value(found.group("current"))
    if arg in LIMIT_ARGUMENTS and current is not None:
        return arg, current
    if arg != SAC:
        return None
    existing = Ordering.KEY if current is True else Ordering.NONE
    if existing is spec.ordering or spec.group == DLQ_GROUP:
        if current is None:  # cannot happen: we ask for the flag only in key order
            return None
        return arg, current
    raise _ordering_conflict(spec, queue, existing, exc)


def _value(text: str) -> Any:
    """A value as RabbitMQ prints it in an inequivalent-argument error (None: none)."""
    text = text.strip()
    typed = _TYPED.match(text)
    if typed is None:
        if text == "none":
            return None
        raw = text.strip("'")
        return {"true": True, "false": False}.get(raw, raw)
    value, kind = typed.group("value"), typed.group("type")
    if kind == "bool":
        return value == "true"
    if kind in _NUMERIC and value.lstrip("-").isdigit():
        return int(value)
    return value


def _ordering_conflict(
    spec: GroupSpec, queue: str, existing: Ordering, exc: BaseException
) -> PolybusError:
    err = ConfigError(
        "ordering",
        f"group {spec.group!r} of topic {spec.topic!r} exists with "
        f"ordering={existing.value!r} (queue {queue!r}, x-single-active-consumer="
        f"{'true' if existing is Ordering.KEY else 'absent'}), not the requested "
        f"ordering={spec.ordering.value!r}; RabbitMQ cannot change a queue's arguments: "
        f"subscribe with ordering={existing.value!r}, or use a new group name for the new "
        f"ordering (or delete the queue once it is drained: rabbitmqctl delete_queue {queue})",
    )
    err.__cause__ = exc
    return err


async def declare_delay_queue(link: Link, delay_queue: str, work_queue: str) -> None:
    """The classic durable queue where delayed redeliveries wait out their TTL."""
    chan: Chan = await link.channel()
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": work_queue}
    try:
        await chan.call(
            lambda cb: chan.native.queue_declare(
                delay_queue, durable=True, arguments=arguments, callback=cb
            )
        )
    except pe.AMQPError as exc:
        raise _errors.declare_error(exc, "group", f"delay queue {delay_queue!r}") from exc
    finally:
        await chan.close()


async def ready_count(link: Link, queue: str) -> int | None:
    """The ready messages of ``queue`` (``queue.declare-ok``'s ``message_count`` of a
    passive declaration, on a throw-away channel), None if the queue does not exist.

    A passive declaration creates nothing, consumes nothing and leaves every delivery
    count as it is. RabbitMQ counts only the *ready* messages there: those delivered
    to a consumer and not settled yet (unacked) are not in it.
    """
    chan = await link.channel()
    try:
        frame = await chan.call(
            lambda cb: chan.native.queue_declare(queue, passive=True, callback=cb)
        )
    except pe.ChannelClosedByBroker as exc:
        if exc.reply_code == _errors.NOT_FOUND:
            return None
        raise _errors.declare_error(exc, "group", f"queue {queue!r}") from exc
    except pe.AMQPError as exc:
        raise _errors.declare_error(exc, "group", f"queue {queue!r}") from exc
    finally:
        await chan.close()
    return int(frame.method.message_count)


async def delete_queue(link: Link, queue: str) -> None:
    """Delete ``queue`` (and the messages in it); a queue that is not there is fine."""
    chan = await link.channel()
    try:
        await chan.call(lambda cb: chan.native.queue_delete(queue, callback=cb))
    except pe.ChannelClosedByBroker as exc:
        if exc.reply_code != _errors.NOT_FOUND:
            raise _errors.declare_error(exc, "group", f"queue {queue!r}") from exc
    except pe.AMQPError as exc:
        raise _errors.declare_error(exc, "group", f"queue {queue!r}") from exc
    finally:
        await chan.close()

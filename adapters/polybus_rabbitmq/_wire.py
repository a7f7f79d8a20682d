"""Envelope <-> AMQP properties, and deliveries -> :class:`polybus.Message`. Pure.

Native fields carry what AMQP has: ``message_id`` (id), ``content_type``, ``timestamp``
(seconds) and ``delivery_mode=2`` (persistent). The key and the millisecond publish
time travel as ``polybus-key`` / ``polybus-published-at`` headers (AMQP has no key
field; a fanout exchange ignores routing keys). ``polybus-attempt`` carries attempts
already made across a delayed-redelivery copy; it is removed on delivery.

A foreign message (published by a plain AMQP client) without ``message_id`` gets
``amqp-<random>``, fresh for every delivery: AMQP 0-9-1 gives a message no identity
of its own (delivery tags restart at 1 on every channel).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pika

from polybus.spi import Envelope, Message, headers, new_id, now

BROKER_HEADERS = frozenset(
    {
        "x-delivery-count",
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
"""Headers RabbitMQ adds; polybus reads them and keeps them out of ``Message.headers``."""

FOREIGN_ID_PREFIX = "amqp-"


def properties(env: Envelope, *, attempts_done: int = 0, expiration_ms: int | None = None) -> Any:
    """The ``BasicProperties`` of ``env`` (persistent)."""
    native: dict[str, Any] = dict(env.headers)
    if env.key is not None:
        native[headers.KEY] = env.key
    native[headers.PUBLISHED_AT] = str(int(env.published_at.timestamp() * 1000))
    if attempts_done:
        native[headers.ATTEMPT] = str(attempts_done)
    return pika.BasicProperties(
        message_id=env.id,
        content_type=env.content_type,
        timestamp=int(env.published_at.timestamp()),
        delivery_mode=2,
        headers=native,
        expiration=None if expiration_ms is None else str(expiration_ms),
    )


def envelope_of(msg: Message) -> Envelope:
    """The envelope that republishes ``msg`` unchanged (for a delayed redelivery)."""
    return Envelope(
        id=msg.id,
        body=msg.body,
        key=msg.key,
        headers=dict(msg.headers),
        content_type=msg.content_type,
        published_at=msg.published_at or now(),
    )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _moment(seconds: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):  # a foreign client's odd timestamp
        return None


def message(topic: str, group: str, method: Any, props: Any, body: bytes, receipt: Any) -> Message:
    """A :class:`Message` for one delivery. ``delivery_attempt`` is the broker's
    ``x-delivery-count`` (quorum queues; 0 or absent on the first delivery) plus one,
    plus the attempts a delayed copy already made; a classic queue counts nothing, so
    a redelivery there is only known to be at least the second attempt."""
    raw_headers: Mapping[str, Any] = props.headers or {}
    fields = {k: _text(v) for k, v in raw_headers.items() if k not in BROKER_HEADERS}
    done = fields.pop(headers.ATTEMPT, "0")
    count = raw_headers.get("x-delivery-count")
    attempt = (int(done) if done.isdigit() else 0) + 1
    if isinstance(count, int) and not isinstance(count, bool):
        attempt += count
    elif method.redelivered:
        attempt = max(attempt, 2)
    key = fields.pop(headers.KEY, None)
    stamp = fields.pop(headers.PUBLISHED_AT, None)
    published = None
    if stamp is not None and stamp.isdigit():
        published = _moment(int(stamp) / 1000)
    if published is None and isinstance(props.timestamp, int) and props.timestamp:
        published = _moment(props.timestamp)
    return Message(
        id=props.message_id or f"{FOREIGN_ID_PREFIX}{new_id()}",
        topic=topic,
        body=body,
        group=group,
        key=key,
        headers=fields,
        content_type=props.content_type,
        published_at=published,
        delivery_attempt=attempt,
        raw=(method, props),
        receipt=receipt,
    )

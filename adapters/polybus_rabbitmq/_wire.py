"""Envelope <-> AMQP properties, and deliveries -> :class:`polybus.Message`. Pure.

Native fields carry what AMQP has: ``message_id`` (id), ``content_type``, ``timestamp``
(seconds) and ``delivery_mode=2`` (persistent). The key and the millisecond publish
time travel as ``polybus-key`` / ``polybus-published-at`` headers (AMQP has no key
field; a fanout exchange ignores routing keys). ``polybus-attempt`` carries attempts
already made across a delayed-redelivery copy; it is removed on delivery.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pika

from polybus import headers as h
from polybus._message import Envelope, Message, now

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


def properties(env: Envelope, *, attempts_done: int = 0, expiration_ms: int | None = None) -> Any:
    """The ``BasicProperties`` of ``env`` (persistent)."""
    headers: dict[str, Any] = dict(env.headers)
    if env.key is not None:
        headers[h.KEY] = env.key
    headers[h.PUBLISHED_AT] = str(int(env.published_at.timestamp() * 1000))
    if attempts_done:
        headers[h.ATTEMPT] = str(attempts_done)
    return pika.BasicProperties(
        message_id=env.id,
        content_type=env.content_type,
        timestamp=int(env.published_at.timestamp()),
        delivery_mode=2,
        headers=headers,
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


def message(
    topic: str, group: str, method: Any, props: Any, body: bytes, names: Any = None
) -> Message:
    """A :class:`Message` for one delivery, ``delivery_attempt`` from the broker's
    ``x-delivery-count`` (absent on the first delivery of a quorum queue) plus the
    attempts a delayed copy already made. ``names`` (a :class:`_topology.Names`) lets
    a native dead letter be described with polybus's ``polybus-dlq-*`` headers."""
    raw_headers: Mapping[str, Any] = props.headers or {}
    headers = {k: _text(v) for k, v in raw_headers.items() if k not in BROKER_HEADERS}
    done = headers.pop(h.ATTEMPT, "0")
    count = raw_headers.get("x-delivery-count")
    attempt = (int(done) if done.isdigit() else 0) + (int(count) if count else 0) + 1
    if count is None and method.redelivered and not isinstance(count, int):
        # classic queues count nothing: a redelivery is at least the second attempt
        attempt = max(attempt, 2)
    key = headers.pop(h.KEY, None)
    stamp = headers.pop(h.PUBLISHED_AT, None)
    published: datetime | None = None
    if stamp is not None and stamp.isdigit():
        published = datetime.fromtimestamp(int(stamp) / 1000, UTC)
    elif props.timestamp:
        published = datetime.fromtimestamp(props.timestamp, UTC)
    deaths = raw_headers.get("x-death")
    if deaths and names is not None and h.DLQ_REASON not in headers:
        _describe_native_dead_letter(headers, deaths, names)
    return Message(
        id=props.message_id or f"amqp-{method.delivery_tag}",
        topic=topic,
        body=body,
        group=group,
        key=key,
        headers=headers,
        content_type=props.content_type,
        published_at=published,
        delivery_attempt=attempt,
        raw=(method, props),
    )


def _describe_native_dead_letter(headers: dict[str, str], deaths: Any, names: Any) -> None:
    """Fill the ``polybus-dlq-*`` headers of a message RabbitMQ dead-lettered itself."""
    latest = deaths[0] if isinstance(deaths, list) and deaths else None
    if not isinstance(latest, Mapping) or _text(latest.get("reason", "")) != "delivery_limit":
        return
    origin = names.origin_of(_text(latest.get("queue", "")))
    if origin is None:
        return
    topic, group = origin
    moment = latest.get("time")
    stamp = (
        moment.replace(tzinfo=UTC).isoformat(timespec="milliseconds")
        if isinstance(moment, datetime)
        else now().isoformat(timespec="milliseconds")
    )
    limit = names.limits.get((topic, group))
    headers[h.DLQ_REASON] = (
        f"delivery limit of {limit} reached" if limit else "delivery limit reached"
    )
    headers[h.DLQ_ORIGINAL_TOPIC] = topic
    headers[h.DLQ_ORIGINAL_GROUP] = group
    if limit:
        headers[h.DLQ_ATTEMPTS] = str(limit)
    headers.setdefault(h.DLQ_FIRST_FAILURE, stamp)
    headers.setdefault(h.DLQ_LAST_FAILURE, stamp)

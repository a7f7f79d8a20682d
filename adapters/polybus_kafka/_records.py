"""Envelope <-> Kafka record mapping and topic names: pure functions, no client calls.

The key is the record key, the publish time the record's CreateTime; the id and the
content type travel as ``polybus-id`` / ``polybus-content-type`` headers, user headers
as headers. The content type of bytes bodies is implied by a ``polybus-id`` without a
content-type header (see README.md, "Records").
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from polybus.spi import BYTES, Envelope, Message, fit_name, headers

RecordHeaders = list[tuple[str, str | bytes | None]]

_ID = headers.ID
_CONTENT_TYPE = headers.CONTENT_TYPE
_BYTES = BYTES

TOPIC_CHARACTERS = "A-Za-z0-9._-"
MAX_TOPIC_LENGTH = 249
INTERNAL_PREFIX = "__"
"""Kafka's own topics (``__consumer_offsets``, ``__transaction_state``) start with it."""


@functools.lru_cache(maxsize=1024)
def kafka_topic(topic: str) -> str:
    """The Kafka topic that carries the polybus topic ``topic``: the name itself when
    Kafka accepts it, else a fitted name with a hash suffix (:func:`polybus.spi.fit_name`).
    Used for every publish, declaration and subscription, so all of them agree."""
    if topic in (".", ".."):  # valid characters, but names Kafka refuses
        return fit_name(
            topic, allowed=TOPIC_CHARACTERS, first="A-Za-z0-9_-", max_length=MAX_TOPIC_LENGTH
        )
    return fit_name(
        topic,
        allowed=TOPIC_CHARACTERS,
        max_length=MAX_TOPIC_LENGTH,
        reserved_prefixes=(INTERNAL_PREFIX,),
    )


def record_headers(env: Envelope) -> RecordHeaders:
    """The record headers of ``env``: user headers, ``polybus-id``, and the content type
    unless it is bytes (an envelope without content type sends an empty one). Values are
    ``str``: librdkafka encodes them as UTF-8 itself, cheaper than an encode per field."""
    ctype = env.content_type
    if ctype == _BYTES and not env.headers:
        return [(_ID, env.id)]  # the usual envelope
    out: RecordHeaders = list(env.headers.items()) if env.headers else []
    out.append((_ID, env.id))
    if ctype != _BYTES:
        out.append((_CONTENT_TYPE, ctype or ""))
    return out


class Timestamps:
    """Converts publish times to record timestamps (ms), remembering the last one: a
    batch from ``publish_many`` shares one ``published_at``, so this is one conversion
    per batch, not per message."""

    __slots__ = ("_last", "_millis")

    def __init__(self) -> None:
        self._last: datetime | None = None
        self._millis = 0

    def millis(self, when: datetime) -> int:
        if when is not self._last:
            self._last = when
            self._millis = int(when.timestamp() * 1000)
        return self._millis


class Decoder:
    """Builds the :class:`Message` objects of one polybus topic and group.

    Records fetched together usually share their CreateTime (one publish batch), so the
    last timestamp's ``datetime`` is reused.
    """

    __slots__ = ("_stamp", "_when", "group", "topic")

    def __init__(self, topic: str, group: str) -> None:
        self.topic = topic
        """The polybus topic name (not the fitted Kafka name)."""
        self.group = group
        self._stamp: int | None = None
        self._when: datetime | None = None

    def message(self, record: Any, attempt: int, receipt: Any) -> Message:
        """The message of ``record``; its key as text (polybus keys are UTF-8, other
        bytes are replaced). A record published by another client (no
        ``polybus-id``) gets the id ``<polybus topic>/<partition>/<offset>``: unique,
        and the same on every redelivery."""
        msg_id = content_type = None
        typed = False
        fields: dict[str, str] = {}
        raw_headers = record.headers()
        if raw_headers:
            for name, value in raw_headers:
                text = value.decode("utf-8", errors="replace") if value is not None else ""
                if name == _ID:
                    msg_id = text
                elif name == _CONTENT_TYPE:
                    content_type = text or None
                    typed = True
                else:
                    fields[name] = text
        if not msg_id:  # published by another client
            msg_id = f"{self.topic}/{record.partition()}/{record.offset()}"
        elif not typed:  # published by polybus, bytes
            content_type = _BYTES
        kind, stamp = record.timestamp()
        published = None
        if kind and stamp >= 0:
            if stamp != self._stamp:
                self._stamp = stamp
                self._when = datetime.fromtimestamp(stamp / 1000, UTC)
            published = self._when
        value = record.value()
        key = record.key()
        # positional, in field order: the cheapest way to build the dataclass
        return Message(
            msg_id,
            self.topic,
            value if value is not None else b"",
            self.group,
            key.decode("utf-8", errors="replace") if key is not None else None,
            fields,
            content_type,
            published,
            attempt,
            record,
            receipt,
        )

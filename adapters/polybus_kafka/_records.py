"""Envelope <-> Kafka record mapping: pure functions, no client calls.

Native fields carry what Kafka has: the key is the record key (it picks the partition)
and the publish time is the record's CreateTime timestamp. The id and content type
travel as ``polybus-id`` / ``polybus-content-type`` headers; user headers as headers.
The content type of bytes bodies (``application/octet-stream``, the usual one) is left
out: a record with a ``polybus-id`` and no content-type header has that type, and an
envelope without a content type sends an empty one. One header less per record is
measurably cheaper to produce, store and fetch.
Keys and header values are given to confluent-kafka as ``str``: it encodes them as
UTF-8 itself, which saves an encode call per field in Python.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from polybus import headers as h
from polybus._codec import BYTES
from polybus._message import Envelope, Message

RecordHeaders = list[tuple[str, str | bytes | None]]

_ID = h.ID
_CONTENT_TYPE = h.CONTENT_TYPE
_BYTES = BYTES


def record_headers(env: Envelope) -> RecordHeaders:
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


def record_key(record: Any) -> str | None:
    """The record's key as text (keys polybus publishes are UTF-8 strings)."""
    key = record.key()
    return key.decode("utf-8", errors="replace") if key is not None else None


class Decoder:
    """Builds :class:`Message` objects from the records of one topic and group.
    Records fetched together usually share their CreateTime (one publish batch), so
    the last timestamp's ``datetime`` is reused."""

    __slots__ = ("_stamp", "_when", "group", "topic")

    def __init__(self, topic: str, group: str) -> None:
        self.topic = topic
        self.group = group
        self._stamp: int | None = None
        self._when: datetime | None = None

    def message(self, record: Any, key: str | None, attempt: int, receipt: Any) -> Message:
        """The message of ``record`` (whose key :func:`record_key` gave). A record
        published by another client has no ``polybus-id``: its id is then
        ``topic/partition/offset``, stable across redeliveries."""
        msg_id = content_type = None
        typed = False
        headers: dict[str, str] = {}
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
                    headers[name] = text
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
        # positional, in field order: the cheapest way to build the dataclass
        return Message(
            msg_id,
            self.topic,
            value if value is not None else b"",
            self.group,
            key,
            headers,
            content_type,
            published,
            attempt,
            record,
            receipt,
        )

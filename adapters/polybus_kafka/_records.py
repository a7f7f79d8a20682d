"""Envelope <-> Kafka record mapping: pure functions, no client calls.

Native fields carry what Kafka has: the key is the record key (it picks the partition)
and the publish time is the record's CreateTime timestamp. The id and content type
travel as ``polybus-id`` / ``polybus-content-type`` headers; user headers as headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from polybus import headers as h
from polybus._message import Envelope, Message, new_id

RecordHeaders = list[tuple[str, str | bytes | None]]

_CREATE_TIME = 1  # confluent_kafka.TIMESTAMP_CREATE_TIME


def record_headers(env: Envelope) -> RecordHeaders:
    out: RecordHeaders = [(name, value.encode("utf-8")) for name, value in env.headers.items()]
    out.append((h.ID, env.id.encode("utf-8")))
    if env.content_type is not None:
        out.append((h.CONTENT_TYPE, env.content_type.encode("utf-8")))
    return out


def record_key(env: Envelope) -> bytes | None:
    return None if env.key is None else env.key.encode("utf-8")


def record_timestamp(env: Envelope) -> int:
    return int(env.published_at.timestamp() * 1000)


def to_message(record: Any, topic: str, group: str) -> Message:
    """A :class:`Message` (attempt 1, no receipt yet) from a confluent-kafka record.

    A record published by another client has no ``polybus-id``: its id is then
    ``topic/partition/offset``, stable across redeliveries.
    """
    headers: dict[str, str] = {}
    for name, value in _headers(record.headers()):
        headers[name] = value.decode("utf-8", errors="replace") if value is not None else ""
    msg_id = headers.pop(h.ID, None) or f"{topic}/{record.partition()}/{record.offset()}"
    content_type = headers.pop(h.CONTENT_TYPE, None)
    key = record.key()
    kind, stamp = record.timestamp()
    published = datetime.fromtimestamp(stamp / 1000, UTC) if kind and stamp >= 0 else None
    value = record.value()
    return Message(
        id=msg_id or new_id(),
        topic=topic,
        body=value if value is not None else b"",
        group=group,
        key=key.decode("utf-8", errors="replace") if key is not None else None,
        headers=headers,
        content_type=content_type,
        published_at=published,
        raw=record,
    )


def _headers(raw: Sequence[tuple[str, bytes | None]] | None) -> Sequence[tuple[str, bytes | None]]:
    return raw or ()

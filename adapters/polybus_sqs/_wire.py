"""The wire format: polybus envelopes to SNS/SQS messages and back (pure functions).

* **Body.** SNS and SQS bodies are text (XML characters only, never empty). A body
  that is such text travels as is; any other body (binary, empty) travels base64
  encoded, flagged in the envelope attribute.
* **Headers.** Each user header travels as its own ``String`` message attribute
  (readable by any SQS consumer), in name order, while the 10-attribute limit allows:
  one slot is always kept for the envelope attribute. Headers beyond that, and headers
  whose name or value SQS does not accept as an attribute, are packed into it.
* **Envelope attribute** ``polybus-envelope``: compact JSON with the message id
  (``id``), key (``key``), content type (``ct``), publish time in ms (``ts``), the body
  encoding (``enc``, absent for plain text) and packed headers (``h``).
* **FIFO.** The key is the MessageGroupId (a keyless message gets its own id as group:
  no order is promised for it), ``Envelope.dedup_id`` the MessageDeduplicationId;
  values outside SQS's alphabet or 128 characters are replaced by a stable hash.

A message without the envelope attribute (another producer) is still read: id is the
SQS MessageId, key the MessageGroupId, headers its String/Number attributes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from polybus.spi import Envelope

MAX_MESSAGE_BYTES = 256 * 1024
"""SQS and SNS limit for one message, body plus attribute names, types and values."""
MAX_BATCH_BYTES = 256 * 1024
"""SQS SendMessageBatch and SNS PublishBatch limit for a whole request."""
MAX_BATCH_ENTRIES = 10
MAX_ATTRIBUTES = 10
ENVELOPE_ATTRIBUTE = "polybus-envelope"
_EMPTY = "="

_TEXT_OK = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTR_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_FIFO_ID = re.compile(r"[!-~]{1,128}")


@dataclass(frozen=True, slots=True)
class Wire:
    """One message as SNS/SQS take it; ``size`` is what counts against the limits."""

    id: str
    body: str
    attributes: dict[str, dict[str, str]]
    size: int
    group_id: str | None = None
    dedup_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    id: str
    body: bytes
    key: str | None
    content_type: str | None
    published_at: datetime | None
    headers: dict[str, str]


def _is_text(value: str) -> bool:
    return bool(value) and _TEXT_OK.search(value) is None


def _attr_name_ok(name: str) -> bool:
    low = name.lower()
    return (
        _ATTR_NAME.fullmatch(name) is not None
        and not name.startswith(".")
        and not name.endswith(".")
        and ".." not in name
        and not low.startswith(("aws.", "amazon."))
        and name != ENVELOPE_ATTRIBUTE
    )


def _fifo_id(value: str) -> str:
    if _FIFO_ID.fullmatch(value):
        return value
    return "h-" + hashlib.sha256(value.encode()).hexdigest()


def _attribute(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def _attribute_size(name: str, value: str) -> int:
    return len(name.encode()) + len("String") + len(value.encode())


def encode(env: Envelope, *, fifo: bool) -> Wire:
    """``env`` as one SNS/SQS message (see the module docstring)."""
    meta: dict[str, Any] = {"id": env.id, "ts": int(env.published_at.timestamp() * 1000)}
    if env.key is not None:
        meta["key"] = env.key
    if env.content_type is not None:
        meta["ct"] = env.content_type
    try:
        text: str | None = env.body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or not _is_text(text):
        text = base64.b64encode(env.body).decode("ascii") or _EMPTY
        meta["enc"] = "b64"
    attributes: dict[str, dict[str, str]] = {}
    packed: dict[str, str] = {}
    for name in sorted(env.headers):
        value = env.headers[name]
        fits = len(attributes) < MAX_ATTRIBUTES - 1
        if fits and _attr_name_ok(name) and _is_text(value):
            attributes[name] = _attribute(value)
        else:
            packed[name] = value
    if packed:
        meta["h"] = packed
    attributes[ENVELOPE_ATTRIBUTE] = _attribute(
        json.dumps(meta, separators=(",", ":"), ensure_ascii=False)
    )
    size = len(text.encode()) + sum(
        _attribute_size(n, a["StringValue"]) for n, a in attributes.items()
    )
    if not fifo:
        return Wire(env.id, text, attributes, size)
    group = _fifo_id(env.key if env.key is not None else env.id)
    return Wire(env.id, text, attributes, size, group, _fifo_id(env.dedup_id))


def batches(wires: Sequence[Wire]) -> Iterator[list[Wire]]:
    """Consecutive runs of at most 10 messages and 256 KiB (order kept)."""
    run: list[Wire] = []
    total = 0
    for wire in wires:
        if run and (len(run) == MAX_BATCH_ENTRIES or total + wire.size > MAX_BATCH_BYTES):
            yield run
            run, total = [], 0
        run.append(wire)
        total += wire.size
    if run:
        yield run


def decode(message: Mapping[str, Any]) -> Decoded:
    """A received SQS message (``ReceiveMessage`` dict) as envelope fields."""
    attrs: Mapping[str, Any] = message.get("MessageAttributes") or {}
    system: Mapping[str, str] = message.get("Attributes") or {}
    headers: dict[str, str] = {}
    for name, attr in attrs.items():
        if name != ENVELOPE_ATTRIBUTE and "StringValue" in attr:
            headers[name] = attr["StringValue"]
    body_text: str = message.get("Body", "")
    meta = _meta(attrs.get(ENVELOPE_ATTRIBUTE))
    if meta is None:
        sent = system.get("SentTimestamp")
        return Decoded(
            id=str(message.get("MessageId", "")),
            body=body_text.encode(),
            key=system.get("MessageGroupId"),
            content_type=None,
            published_at=_from_ms(sent) if sent else None,
            headers=headers,
        )
    packed = meta.get("h")
    if isinstance(packed, dict):
        headers.update({str(k): str(v) for k, v in packed.items()})
    body = body_text.encode()
    if meta.get("enc") == "b64":
        # "=" stands for the empty body (SQS and SNS refuse an empty one)
        with contextlib.suppress(binascii.Error, ValueError):
            body = b"" if body_text == _EMPTY else base64.b64decode(body_text, validate=True)
    ts = meta.get("ts")
    return Decoded(
        id=str(meta.get("id") or message.get("MessageId", "")),
        body=body,
        key=meta.get("key"),
        content_type=meta.get("ct"),
        published_at=_from_ms(ts) if ts is not None else None,
        headers=headers,
    )


def _meta(attr: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not attr or "StringValue" not in attr:
        return None
    try:
        meta = json.loads(attr["StringValue"])
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def _from_ms(value: object) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(str(value)) / 1000, UTC)
    except (TypeError, ValueError, OverflowError):
        return None

"""Envelope <-> Pub/Sub message: the pure mapping, no I/O.

Native fields: the body is ``data`` and a non-empty key is the ``ordering_key``.
Everything else (id, content type, publish time, user headers) travels as
attributes (:func:`polybus.spi.envelope_headers`). Pub/Sub caps an attribute value
at 1024 bytes, so a longer value (a dead letter's traceback) is cut into pieces on
character boundaries, stored as ``NAME`` plus ``NAME#polybus-part-1``..., and joined
again on receipt; the headers a consumer sees are byte-exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from polybus.errors import InvalidMessage
from polybus.spi import Envelope, EnvelopeFields, envelope_headers, split_envelope_headers
from polybus.spi import headers as h

MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY = 256
MAX_ATTRIBUTE_VALUE = 1024
MAX_ORDERING_KEY = 1024
MAX_MESSAGE_BYTES = 10_000_000
"""Pub/Sub's limit for one message: data, attributes and ordering key together."""
PART = "#polybus-part-"


@dataclass(frozen=True, slots=True)
class WireMessage:
    data: bytes
    ordering_key: str
    attributes: dict[str, str]

    @property
    def size(self) -> int:
        attrs = sum(len(k.encode()) + len(v.encode()) for k, v in self.attributes.items())
        return len(self.data) + attrs + len(self.ordering_key.encode())


def encode(env: Envelope) -> WireMessage:
    """The Pub/Sub form of ``env``; :class:`InvalidMessage` if it can never fit."""
    fields = envelope_headers(env)
    key = env.key or ""
    if key:
        fields.pop(h.KEY, None)
        if len(key.encode()) > MAX_ORDERING_KEY:
            raise InvalidMessage(
                f"message {env.id}: key is longer than Pub/Sub's {MAX_ORDERING_KEY}-byte "
                "ordering key limit"
            )
    attributes: dict[str, str] = {}
    for name, value in fields.items():
        if name.lower().startswith("goog"):
            raise InvalidMessage(f"header {name!r}: Pub/Sub reserves names starting with 'goog'")
        if PART in name:
            raise InvalidMessage(f"header {name!r}: {PART!r} is reserved by polybus")
        pieces = _split(value)
        last = f"{name}{PART}{len(pieces) - 1}"
        if len(last.encode()) > MAX_ATTRIBUTE_KEY:
            raise InvalidMessage(
                f"header {name[:40]!r}...: longer than Pub/Sub's {MAX_ATTRIBUTE_KEY}-byte limit"
            )
        attributes[name] = pieces[0]
        for index, piece in enumerate(pieces[1:], start=1):
            attributes[f"{name}{PART}{index}"] = piece
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidMessage(
            f"message {env.id}: {len(attributes)} attributes with polybus's envelope fields; "
            f"Pub/Sub accepts {MAX_ATTRIBUTES}"
        )
    return WireMessage(data=env.body, ordering_key=key, attributes=attributes)


def decode(attributes: Mapping[str, str], ordering_key: str) -> tuple[EnvelopeFields, str | None]:
    """The envelope fields and the key of a received message."""
    joined: dict[str, str] = {}
    parts: dict[str, dict[int, str]] = {}
    for name, value in attributes.items():
        base, sep, index = name.partition(PART)
        if sep and index.isdigit():
            parts.setdefault(base, {})[int(index)] = value
        else:
            joined[name] = value
    for base, pieces in parts.items():
        joined[base] = joined.get(base, "") + "".join(pieces[i] for i in sorted(pieces))
    fields = split_envelope_headers(joined)
    return fields, ordering_key or fields.key


def _split(value: str) -> list[str]:
    if len(value.encode()) <= MAX_ATTRIBUTE_VALUE:
        return [value]
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for char in value:
        width = len(char.encode())
        if size + width > MAX_ATTRIBUTE_VALUE:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    pieces.append("".join(current))
    return pieces

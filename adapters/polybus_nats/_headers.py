"""Envelope <-> NATS headers. Pure functions, no I/O.

The envelope fields travel as polybus headers (``polybus-id`` ...) beside the user
headers, and the dedup id as ``Nats-Msg-Id``. NATS header lines cannot carry CR, LF or
leading/trailing blanks (nats-py trims and flattens them), yet polybus promises headers
byte-exact (a dead letter's traceback has newlines). Such a value is sent with ``%``,
CR, LF, NUL and its edge blanks percent-escaped, and its name listed in
``polybus-nats-escaped``; the consumer side reverses exactly that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote

from polybus.errors import InvalidMessage
from polybus.spi import Envelope, EnvelopeFields, envelope_headers, split_envelope_headers
from polybus.spi import headers as h

__all__ = ["ESCAPED", "EXPECTED_STREAM", "MSG_ID", "decode", "encode", "wire_size"]

MSG_ID = "Nats-Msg-Id"
EXPECTED_STREAM = "Nats-Expected-Stream"
ESCAPED = "polybus-nats-escaped"
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ALWAYS = {"%": "%25", "\r": "%0D", "\n": "%0A", "\0": "%00"}
_HEADER_LINE = b"NATS/1.0\r\n"


def _needs_escape(value: str) -> bool:
    return value != value.strip() or any(c in value for c in _ALWAYS)


def _escape(value: str) -> str:
    body = "".join(_ALWAYS.get(c, c) for c in value)
    start = len(body) - len(body.lstrip())
    end = len(body.rstrip())
    head = "".join(f"%{ord(c):02X}" for c in body[:start])
    tail = "".join(f"%{ord(c):02X}" for c in body[end:])
    return head + body[start:end] + tail


def encode(env: Envelope, stream: str) -> dict[str, str]:
    """The NATS headers of ``env`` bound for ``stream``. :class:`InvalidMessage` names
    a header NATS cannot carry (its name must be an HTTP-style token)."""
    out: dict[str, str] = {}
    escaped: list[str] = []
    for name, value in envelope_headers(env).items():
        if not _NAME.fullmatch(name):
            raise InvalidMessage(
                f"header {name!r}: NATS header names may only hold letters, digits "
                "and !#$%&'*+-.^_`|~"
            )
        if _needs_escape(value):
            escaped.append(name)
            value = _escape(value)
        out[name] = value
    if escaped:
        out[ESCAPED] = ",".join(escaped)
    out[MSG_ID] = env.dedup_id
    # the server refuses the message if the subject is not stored by our stream
    out[EXPECTED_STREAM] = stream
    return out


def decode(headers: Mapping[str, str] | None) -> EnvelopeFields:
    """Inverse of :func:`encode`. A foreign message (no ``polybus-id``) keeps every
    native header as it came, ``Nats-Msg-Id`` included; its ``id`` is None."""
    raw = dict(headers or {})
    if h.ID not in raw:
        return split_envelope_headers(raw)
    raw.pop(MSG_ID, None)
    raw.pop(EXPECTED_STREAM, None)
    names = raw.pop(ESCAPED, "")
    for name in names.split(",") if names else ():
        if name in raw:
            raw[name] = unquote(raw[name])
    return split_envelope_headers(raw)


def wire_size(headers: Mapping[str, str], body: bytes) -> int:
    """Bytes the message takes against the server's ``max_payload`` (headers block
    included, as the server counts it)."""
    size = len(_HEADER_LINE) + 2 + len(body)
    for name, value in headers.items():
        size += len(name) + len(value.encode("utf-8")) + 4
    return size

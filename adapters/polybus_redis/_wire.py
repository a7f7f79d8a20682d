"""Stream entries <-> polybus messages.

An entry polybus writes has the field ``body`` (the body bytes as they are), the user
headers as fields of their own name, and ``polybus-id``, ``polybus-key``,
``polybus-content-type`` and ``polybus-published-at`` (ms since the epoch). An entry
of another client: ``body``, else ``data``, is the body (none: empty); every other field
is a header; the entry id is the message id; its time part is ``published_at``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from polybus.errors import InvalidMessage
from polybus.spi import Envelope, Message, envelope_headers, split_envelope_headers

__all__ = ["BODY", "encode", "message"]

BODY = "body"
FOREIGN_BODY = "data"


def encode(env: Envelope) -> dict[str, str | bytes]:
    """The fields of ``env``'s entry; InvalidMessage for a user header named ``body``."""
    if BODY in env.headers:
        raise InvalidMessage(
            f"message {env.id}: the header name {BODY!r} is the body field of a Redis entry"
        )
    fields: dict[str, str | bytes] = {BODY: env.body}
    fields.update(envelope_headers(env))
    return fields


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def message(
    topic: str,
    group: str,
    entry_id: bytes | str,
    raw: Mapping[Any, Any] | Sequence[Any],
    attempt: int,
) -> Message:
    """The message of one entry (``raw``: its fields as a mapping, or flat as a script
    returns them), delivered for the ``attempt``-th time."""
    if not isinstance(raw, Mapping):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    fields = {_text(k): v for k, v in raw.items()}
    body = fields.pop(BODY, None)
    if body is None:
        body = fields.pop(FOREIGN_BODY, b"")
    ident = _text(entry_id)
    env = split_envelope_headers({k: _text(v) for k, v in fields.items()})
    published = env.published_at
    if published is None:
        millis = ident.partition("-")[0]
        published = datetime.fromtimestamp(int(millis) / 1000, UTC) if millis.isdigit() else None
    return Message(
        env.id or ident,
        topic,
        body if isinstance(body, bytes) else body.encode(),
        group,
        env.key,
        env.headers,
        env.content_type,
        published,
        attempt,
        raw,
        ident,
    )

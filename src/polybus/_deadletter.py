"""Dead-letter records: pure functions that build and undo the dead-lettered copy."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from datetime import datetime

from . import headers as h
from ._message import Envelope, Message, now
from .errors import InvalidMessage

DLQ_GROUP = "polybus-dlq"
"""The group every dead-letter topic has, so dead letters are kept until read."""

MAX_ERROR_MESSAGE = 1000
MAX_TRACEBACK = 2000


def _bounded(text: str, limit: int) -> str:
    # keep the end of a traceback: the frame that raised is the useful part
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def dead_letter_envelope(
    msg: Message,
    reason: str,
    error: BaseException | None = None,
    metadata: Mapping[str, str] | None = None,
    at: datetime | None = None,
) -> Envelope:
    """The copy of ``msg`` for the dead-letter topic: id, key, headers and body kept
    byte-exact; reason, error, origin, attempts and failure times added as headers.
    ``metadata`` (from middleware: first failure time, attempts) overrides defaults."""
    moment = _stamp(at or now())
    headers = dict(msg.headers)
    headers[h.DLQ_REASON] = reason
    headers[h.DLQ_ORIGINAL_TOPIC] = msg.topic
    headers[h.DLQ_ORIGINAL_GROUP] = msg.group or ""
    headers[h.DLQ_ATTEMPTS] = str(msg.delivery_attempt)
    headers[h.DLQ_FIRST_FAILURE] = moment
    headers[h.DLQ_LAST_FAILURE] = moment
    if error is not None:
        headers[h.DLQ_ERROR_TYPE] = f"{type(error).__module__}.{type(error).__qualname__}"
        headers[h.DLQ_ERROR_MESSAGE] = _bounded(str(error), MAX_ERROR_MESSAGE)
        trace = "".join(traceback.format_exception(error))
        headers[h.DLQ_TRACEBACK] = _bounded(trace, MAX_TRACEBACK)
    if metadata:
        headers.update(metadata)
    return Envelope(
        id=msg.id,
        body=msg.body,
        key=msg.key,
        headers=headers,
        content_type=msg.content_type,
        published_at=msg.published_at or now(),
    )


def replay_envelope(msg: Message, group: str) -> tuple[str, Envelope]:
    """The original topic of a dead letter of ``group`` and the envelope that
    republishes it: dead-letter metadata removed, id kept, replay count raised, and
    addressed to ``group`` only (every other group of the topic settles it unseen)."""
    headers = {k: v for k, v in msg.headers.items() if not k.startswith("polybus-dlq-")}
    topic = msg.headers.get(h.DLQ_ORIGINAL_TOPIC)
    if not topic:
        raise InvalidMessage(
            f"message {msg.id} is not a polybus dead letter: no {h.DLQ_ORIGINAL_TOPIC} header"
        )
    count = headers.get(h.REPLAY, "0")
    headers[h.REPLAY] = str(int(count) + 1 if count.isdigit() else 1)
    headers[h.REPLAY_GROUP] = group
    return topic, Envelope(
        id=msg.id,
        body=msg.body,
        key=msg.key,
        headers=headers,
        content_type=msg.content_type,
        published_at=msg.published_at or now(),
    )

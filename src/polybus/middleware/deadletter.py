"""Dead-letter routing: permanent errors at once, exhausted retries at the end.

The copy goes to the group's dead-letter destination through ``msg.dead_letter``:
the adapter's ``dead_letter_topic(topic, group)`` (by default ``TOPIC.GROUP.dlq``; an
adapter maps it onto the broker's native DLQ where it has one). It keeps id, key,
headers and body byte-exact and adds the ``polybus-dlq-*`` headers of
:mod:`polybus.headers`. If that publish fails the original is nacked, never acked,
and the publish error propagates. Transient errors pass through untouched (the Worker
nacks them), so without a retry middleware inside, nothing is dead-lettered for them.
"""

from __future__ import annotations

from .._message import Message
from .._worker import Handler
from ..errors import Reject
from ._common import RetriesExhausted, is_permanent

__all__ = ["DeadLetter"]


class DeadLetter:
    """Route permanently failed messages to the dead-letter destination.

    ``permanent`` adds exception types to the permanent ones (see
    :func:`~polybus.middleware.is_permanent`). A message the inner handler already
    settled is left alone.
    """

    def __init__(self, *, permanent: tuple[type[BaseException], ...] = ()) -> None:
        self.permanent = permanent

    def __repr__(self) -> str:
        return "<DeadLetter>"

    def __call__(self, handler: Handler) -> Handler:
        permanent = self.permanent

        async def dead_lettering(msg: Message) -> None:
            try:
                await handler(msg)
            except RetriesExhausted as exc:
                if msg.settled:
                    raise
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                reason = f"retries exhausted after {exc.attempts} attempts"
                await msg.dead_letter(reason, error=cause, metadata=exc.metadata())
            except Exception as exc:
                if msg.settled or not is_permanent(exc, permanent):
                    raise
                if isinstance(exc, Reject):
                    reason = f"rejected: {exc.reason}"
                else:
                    reason = f"permanent error: {type(exc).__name__}"
                await msg.dead_letter(reason, error=exc)

        return dead_lettering

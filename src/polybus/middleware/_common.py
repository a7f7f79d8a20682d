"""What several middleware share: error classification, scopes, backend lookup."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING

from .. import headers as h
from ..errors import PERMANENT, PolybusError

if TYPE_CHECKING:
    from .._message import Message
    from ..capabilities import Capabilities


def is_permanent(exc: BaseException, extra: tuple[type[BaseException], ...] = ()) -> bool:
    """True when retrying ``exc`` cannot help: one of :data:`PERMANENT`, one of
    ``extra``, or any error that says so itself with ``retryable = False``."""
    if isinstance(exc, PERMANENT) or (extra and isinstance(exc, extra)):
        return True
    return getattr(exc, "retryable", None) is False


class RetriesExhausted(PolybusError):
    """Raised by :class:`~polybus.middleware.Retry` when a message has used its attempts
    or its retry time; the last handler error is ``__cause__``. The dead-letter
    middleware routes the message with these facts."""

    def __init__(
        self, message_id: str, attempts: int, first_failure: datetime, last_failure: datetime
    ) -> None:
        super().__init__(f"message {message_id}: retries exhausted after {attempts} attempts")
        self.attempts = attempts
        self.first_failure = first_failure
        self.last_failure = last_failure

    def metadata(self) -> dict[str, str]:
        """The dead-letter headers this failure history overrides."""
        return {
            h.DLQ_ATTEMPTS: str(self.attempts),
            h.DLQ_FIRST_FAILURE: self.first_failure.isoformat(timespec="milliseconds"),
            h.DLQ_LAST_FAILURE: self.last_failure.isoformat(timespec="milliseconds"),
        }


def scope(msg: Message) -> str:
    """The namespace of per-group bookkeeping: every group processes every message."""
    return f"{msg.topic}/{msg.group or ''}"


def processing_id(msg: Message) -> str:
    """The id idempotency remembers: the message id, plus the replay count for a
    replayed dead letter, so that replaying is not swallowed as a duplicate."""
    replay = msg.headers.get(h.REPLAY)
    return f"{msg.id}.r{replay}" if replay else msg.id


def capabilities_of(msg: Message) -> Capabilities | None:
    """The capabilities of the backend that delivered ``msg``, if it came through a
    subscription (messages built by hand in tests and benchmarks have none)."""
    caps: Capabilities | None = getattr(msg._settler, "capabilities", None)
    return caps


deferred: ContextVar[bool] = ContextVar("polybus_deferred", default=False)
"""Set by a middleware that nacks a message for a reason that is not a failure (the
idempotency lease of a twin in progress), so the circuit breaker does not count it.
Middleware await each other directly, so an inner ``set`` is visible outside."""


class DeferralWatch:
    """Whether an inner middleware deferred the message (see :func:`watch_deferral`)."""

    __slots__ = ("outer", "seen")

    def __init__(self, outer: DeferralWatch | None) -> None:
        self.outer = outer
        self.seen = False


_watch: ContextVar[DeferralWatch | None] = ContextVar("polybus_deferral_watch", default=None)


@contextmanager
def watch_deferral() -> Iterator[DeferralWatch]:
    """Learn whether the chain inside deferred the message. ``deferred`` alone cannot
    tell a middleware outside the circuit breaker: the breaker resets it on its way out
    (that reset keeps one message's deferral from leaking into the next)."""
    watch = DeferralWatch(_watch.get())
    token = _watch.set(watch)
    try:
        yield watch
    finally:
        _watch.reset(token)


def note_deferral() -> None:
    """Record that the message is being nacked for a reason that is not a failure:
    sets :data:`deferred` and tells every :func:`watch_deferral` around the call."""
    deferred.set(True)
    watch = _watch.get()
    while watch is not None:
        watch.seen = True
        watch = watch.outer

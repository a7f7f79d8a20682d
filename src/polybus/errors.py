"""Errors raised by polybus.

Every error polybus raises derives from :class:`PolybusError`. Backend (native client)
exceptions are translated once, at the edge of each adapter, and kept as ``__cause__``::

    PolybusError
    ├── ConfigError            bad URL, option or setting; ``.field`` names it
    ├── BrokerUnavailable      cannot reach / lost the broker (retryable)
    ├── PublishError           the broker did not confirm a publish; ``.retryable``
    │   └── MessageTooLarge    the encoded message exceeds the backend's limit
    ├── SerializationError     a body could not be encoded or decoded (permanent)
    ├── InvalidMessage         a message that can never be published (reserved header...)
    ├── SettlementError        a message was settled twice or after its subscription closed
    ├── BusClosed              an operation on a Bus that is not open (never opened, or closed)
    └── Reject                 raised by a handler: permanent failure, dead-letter now

No message text ever contains a secret: URLs are redacted before they are formatted.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "BusClosed",
    "ConfigError",
    "InvalidMessage",
    "MessageTooLarge",
    "PERMANENT",
    "PolybusError",
    "PublishError",
    "Reject",
    "SerializationError",
    "SettlementError",
]


class PolybusError(Exception):
    """Base class of every error polybus raises."""


class ConfigError(PolybusError, ValueError):
    """A URL, option or setting is invalid. ``field`` names the offending setting."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid setting {field!r}: {problem}")


class BrokerUnavailable(PolybusError, ConnectionError):
    """The broker could not be reached, or the connection was lost. Always retryable."""

    retryable = True


class PublishError(PolybusError):
    """The broker did not confirm a publish.

    ``retryable`` says whether publishing the same message again may succeed (a
    timeout, a leader change) or never will (authorisation, an invalid topic).
    ``failed_ids`` lists the message ids that were not confirmed, for batches that
    partially failed; every id not listed was confirmed.
    """

    def __init__(self, message: str, *, retryable: bool, failed_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.failed_ids = failed_ids


class MessageTooLarge(PublishError):
    """The encoded message is larger than the backend accepts. Never retryable."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message, retryable=False)
        self.size = size
        self.limit = limit


class SerializationError(PolybusError, ValueError):
    """A body could not be encoded for publishing, or decoded for a handler.

    Permanent: the retry middleware never retries it, the message is dead-lettered.
    """


class InvalidMessage(PolybusError, ValueError):
    """A message that can never be published as given (for example a reserved header)."""


class SettlementError(PolybusError, RuntimeError):
    """A message was settled twice, or after its subscription was closed."""


class BusClosed(PolybusError, RuntimeError):
    """An operation on a :class:`~polybus.Bus` that is not open: it was never opened
    (``async with polybus.connect(...)`` or ``await bus.open()``), or it was closed.
    The same error on every backend; never retryable on the same Bus."""

    retryable = False


class Reject(PolybusError):
    """Raised by a handler to say: this message can never succeed, dead-letter it now.

    The retry middleware never retries a ``Reject``; the dead-letter middleware routes
    the message with ``reason`` at once.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


PERMANENT: tuple[type[BaseException], ...] = (Reject, SerializationError, InvalidMessage)
"""Errors that can never succeed on a retry: a handler's :class:`Reject` and decode or
validation failures. A message that fails with one is dead-lettered at once."""

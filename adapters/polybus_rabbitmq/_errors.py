"""Native pika exceptions and close reasons -> :mod:`polybus.errors`, in one place.

Every translation keeps the native exception as ``__cause__``. Texts never contain a
password: pika's reasons carry reply codes and server texts, not credentials.
"""

from __future__ import annotations

from pika import exceptions as pe

from polybus.errors import BrokerUnavailable, ConfigError, PolybusError, PublishError

NOT_FOUND = 404
PRECONDITION_FAILED = 406
ACCESS_REFUSED = 403
RESOURCE_LOCKED = 405


def describe(reason: BaseException | None) -> str:
    """A short text for a close reason: ``(406) PRECONDITION_FAILED - ...``."""
    if isinstance(reason, pe.ChannelClosed | pe.ConnectionClosed):
        return f"({reason.reply_code}) {reason.reply_text}"
    return repr(reason) if reason is not None else "unknown reason"


def connection_error(reason: BaseException | None, where: str) -> BrokerUnavailable:
    """The broker could not be reached or the connection was lost."""
    if isinstance(reason, pe.ProbableAuthenticationError | pe.ProbableAccessDeniedError):
        err = BrokerUnavailable(f"RabbitMQ refused the login at {where}: {type(reason).__name__}")
    else:
        err = BrokerUnavailable(f"RabbitMQ at {where} unavailable: {describe(reason)}")
    err.__cause__ = reason
    return err


def declare_error(reason: BaseException | None, field: str, what: str) -> PolybusError:
    """A declaration the broker refused (conflicting arguments, access, locks)."""
    code = getattr(reason, "reply_code", None)
    if code in (PRECONDITION_FAILED, RESOURCE_LOCKED, ACCESS_REFUSED):
        err: PolybusError = ConfigError(
            field, f"{what} conflicts with its existing declaration: {describe(reason)}"
        )
    elif isinstance(reason, pe.ConnectionClosed | pe.AMQPConnectionError):
        err = BrokerUnavailable(f"connection lost while declaring {what}: {describe(reason)}")
    else:
        err = ConfigError(field, f"cannot declare {what}: {describe(reason)}")
    err.__cause__ = reason
    return err


def publish_error(
    reason: BaseException | None, text: str, failed_ids: tuple[str, ...]
) -> PublishError:
    """Confirms lost with the channel or connection: retrying may succeed unless the
    broker refused the target itself (missing exchange, access)."""
    code = getattr(reason, "reply_code", None)
    retryable = code not in (NOT_FOUND, ACCESS_REFUSED, PRECONDITION_FAILED)
    err = PublishError(f"{text}: {describe(reason)}", retryable=retryable, failed_ids=failed_ids)
    err.__cause__ = reason
    return err

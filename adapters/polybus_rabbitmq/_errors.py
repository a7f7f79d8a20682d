"""Native pika exceptions and close reasons -> :mod:`polybus.errors`, in one place.

Every translation keeps the native exception as ``__cause__``. Texts never contain a
password: pika's reasons carry reply codes and server texts, not credentials, and
``where`` names hosts and vhost only.
"""

from __future__ import annotations

from pika import exceptions as pe

from polybus.errors import BrokerUnavailable, ConfigError, PolybusError, PublishError

NOT_FOUND = 404
PRECONDITION_FAILED = 406
ACCESS_REFUSED = 403
RESOURCE_LOCKED = 405
REFUSED = (PRECONDITION_FAILED, RESOURCE_LOCKED, ACCESS_REFUSED)
"""Reply codes that say a declaration can never succeed as asked (not transient)."""


def describe(reason: BaseException | None) -> str:
    """A short text for a close reason: ``(406) PRECONDITION_FAILED - ...``."""
    if isinstance(reason, pe.ChannelClosed | pe.ConnectionClosed):
        return f"({reason.reply_code}) {reason.reply_text}"
    if isinstance(reason, pe.ProbableAuthenticationError | pe.ProbableAccessDeniedError):
        return f"{type(reason).__name__}: {reason.args[0] if reason.args else ''}"
    return repr(reason) if reason is not None else "unknown reason"


def is_login_refused(reason: BaseException | None) -> bool:
    return isinstance(
        reason,
        pe.ProbableAuthenticationError | pe.ProbableAccessDeniedError | pe.AuthenticationError,
    )


def login_refused(reason: BaseException, where: str) -> ConfigError:
    """The broker refused the user name and password, or access to the vhost."""
    err = ConfigError(
        "credentials",
        f"RabbitMQ at {where} refused the login or the vhost: {describe(reason)}",
    )
    err.__cause__ = reason
    return err


def connection_error(reason: BaseException | None, where: str) -> BrokerUnavailable:
    """The broker could not be reached or the connection was lost (retryable)."""
    err = BrokerUnavailable(f"RabbitMQ at {where} unavailable: {describe(reason)}")
    err.__cause__ = reason
    return err


def declare_error(reason: BaseException | None, field: str, what: str) -> PolybusError:
    """A declaration that failed: ConfigError when the broker refused it (conflicting
    arguments, access, locks), BrokerUnavailable for anything else (a lost channel or
    connection, a queue not started yet after a restart)."""
    code = getattr(reason, "reply_code", None)
    err: PolybusError
    if isinstance(reason, pe.ChannelClosedByBroker) and code in REFUSED:
        err = ConfigError(
            field, f"{what} conflicts with its existing declaration: {describe(reason)}"
        )
    else:
        err = BrokerUnavailable(f"declaring {what} failed: {describe(reason)}")
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

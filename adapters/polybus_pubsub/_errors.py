"""google-cloud-pubsub exceptions -> polybus errors, in one place.

The native exception is always kept as ``__cause__``. Messages name the resource and
the operation, never credentials.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from polybus.errors import BrokerUnavailable, ConfigError, PolybusError, PublishError

_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.TooManyRequests,
    gexc.Aborted,
    gexc.Cancelled,
    gexc.Unknown,
    gexc.RetryError,
    gexc.ResourceExhausted,
)


def is_transient(exc: BaseException) -> bool:
    """True for errors after which the same call may succeed (unreachable, overloaded)."""
    return isinstance(exc, (*_TRANSIENT, ConnectionError, TimeoutError))


def admin_error(exc: BaseException, action: str, field: str) -> PolybusError:
    """An error of a topology call (``action`` says what, ``field`` which setting)."""
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return ConfigError(
            "credentials",
            "no Google application default credentials found; set "
            "GOOGLE_APPLICATION_CREDENTIALS, pass options={'credentials': ...}, or use "
            "?emulator=host:port",
        )
    if isinstance(exc, gexc.PermissionDenied | gexc.Unauthenticated | auth_exc.GoogleAuthError):
        return ConfigError("credentials", f"{action}: permission denied ({_detail(exc)})")
    if isinstance(exc, gexc.InvalidArgument | gexc.FailedPrecondition | gexc.OutOfRange):
        return ConfigError(field, f"{action}: rejected by Pub/Sub ({_detail(exc)})")
    if isinstance(exc, gexc.NotFound):
        return ConfigError(field, f"{action}: not found ({_detail(exc)})")
    if is_transient(exc):
        return BrokerUnavailable(f"{action}: Pub/Sub unreachable ({_detail(exc)})")
    return PolybusError(f"{action}: {type(exc).__name__}: {_detail(exc)}")


def consume_error(exc: BaseException, action: str) -> PolybusError:
    """An error of a pull or a settlement call. Transient errors and a subscription
    that is gone (an emulator restarted empty, a deleted subscription) are
    :class:`BrokerUnavailable`: the core opens a fresh consumer, declaring the group
    again first. Refused credentials are a ConfigError; the rest as for topology."""
    if isinstance(exc, gexc.NotFound):
        return BrokerUnavailable(f"{action}: the subscription is gone ({_detail(exc)})")
    return admin_error(exc, action, "group")


def publish_error(exc: BaseException, topic: str, failed_ids: Sequence[str]) -> PublishError:
    """A publish that was not confirmed for ``failed_ids``."""
    retryable = is_transient(exc)
    if isinstance(exc, gexc.NotFound):
        problem = f"topic {topic!r} does not exist"
    else:
        problem = f"{type(exc).__name__}: {_detail(exc)}"
    return PublishError(
        f"publish to {topic!r} not confirmed for {len(failed_ids)} message(s): {problem}",
        retryable=retryable,
        failed_ids=tuple(failed_ids),
    )


EXACTLY_ONCE_FAILURE = "EXACTLY_ONCE_ACKID_FAILURE"


def ack_retryable(exc: BaseException) -> bool:
    """True when an exactly-once acknowledge failed only transiently (Pub/Sub lists
    ``TRANSIENT_FAILURE_*`` per ack id in the error info), so sending it again may
    succeed; False for ``PERMANENT_FAILURE_*`` (the message will be redelivered)."""
    if isinstance(exc, gexc.GoogleAPICallError) and exc.reason == EXACTLY_ONCE_FAILURE:
        reasons = list((exc.metadata or {}).values())
        return bool(reasons) and all(r.startswith("TRANSIENT_") for r in reasons)
    return is_transient(exc)


def _detail(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) and message else str(exc)
    return text[:300]

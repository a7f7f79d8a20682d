"""The one place where nats-py exceptions become :mod:`polybus.errors`.

Every translation keeps the native exception as ``__cause__`` (callers write
``raise translate(exc, ...) from exc``). Connection-level trouble is
:class:`BrokerUnavailable`; JetStream API refusals on topology are
:class:`ConfigError`; publish failures are :class:`PublishError` with ``retryable``
set by whether the same publish can succeed later.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors

from polybus.errors import BrokerUnavailable, ConfigError, PolybusError, PublishError

__all__ = ["NATIVE", "describe", "refused", "publish_error", "topology_error", "unavailable"]

_CONNECTION = (
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.AuthorizationError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.errors.TimeoutError,
    asyncio.TimeoutError,
    OSError,
)
"""Errors that mean: the server (or JetStream) could not be reached in time."""

NATIVE = (nats.errors.Error, OSError, asyncio.TimeoutError)
"""Everything nats-py raises for broker trouble (programming errors are not caught)."""


def refused(exc: BaseException) -> bool:
    """True when the server refused the credentials (a configuration error, not an
    outage). nats-py raises a plain Error quoting the server while connecting."""
    return isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and "authorization violation" in str(exc).lower()
    )


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a native error."""
    if isinstance(exc, nats.js.errors.APIError):
        return f"JetStream error {exc.err_code}: {exc.description}"
    if isinstance(exc, nats.errors.AuthorizationError):
        return "authorization violation (check the URL's credentials)"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def unavailable(exc: BaseException, what: str) -> PolybusError:
    """The error for a failed operation that is not a publish."""
    if isinstance(exc, nats.js.errors.APIError) and not isinstance(
        exc, nats.js.errors.ServiceUnavailableError
    ):
        return ConfigError(what, describe(exc))
    return BrokerUnavailable(f"NATS {what} failed: {describe(exc)}")


def topology_error(exc: BaseException, field: str, what: str) -> PolybusError:
    """The error for a refused stream or consumer creation (``field`` names the topic
    or group); connection trouble stays :class:`BrokerUnavailable`."""
    if isinstance(exc, _CONNECTION):
        return BrokerUnavailable(f"NATS unavailable while creating {what}: {describe(exc)}")
    return ConfigError(field, f"cannot create {what}: {describe(exc)}")


def publish_error(exc: BaseException, topic: str, failed_ids: tuple[str, ...]) -> PublishError:
    """The error for a publish the server did not confirm."""
    retryable = isinstance(exc, _CONNECTION)
    if isinstance(exc, nats.js.errors.APIError) and exc.code is not None:
        # 503 (no JetStream leader yet) and 5xx are transient; 4xx never succeed
        retryable = exc.code >= 500
    return PublishError(
        f"publish to topic {topic!r} not confirmed for {len(failed_ids)} message(s): "
        f"{describe(exc)}",
        retryable=retryable,
        failed_ids=failed_ids,
    )

"""The one place where redis-py exceptions become :mod:`polybus.errors`.

Callers write ``raise translate(exc, what) from exc``, so the native exception stays the
``__cause__``. redis-py never puts the password in its messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis import exceptions as rx

from polybus.errors import BrokerUnavailable, ConfigError, PolybusError, PublishError

__all__ = ["NATIVE", "bounded", "describe", "publish_error", "translate"]

NATIVE = (rx.RedisError, OSError, asyncio.TimeoutError)
"""Everything redis-py raises for server trouble (programming errors are not caught)."""

_TRANSIENT = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "OOM", "READONLY")
"""Error replies that a later attempt can overcome."""


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def transient(exc: BaseException) -> bool:
    """True for an outage: no connection, a timeout, a server loading or busy."""
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        return False
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError | OSError | asyncio.TimeoutError):
        return True
    return isinstance(exc, rx.ResponseError) and str(exc).startswith(_TRANSIENT)


def translate(exc: BaseException, what: str) -> PolybusError:
    """The error for a failed ``what`` (not a publish)."""
    if transient(exc):
        return BrokerUnavailable(f"Redis {what} failed: {describe(exc)}")
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError | rx.NoPermissionError):
        return ConfigError("url", f"the Redis server refused {what}: {describe(exc)}")
    if str(exc).startswith("NOGROUP"):
        return PolybusError(
            f"Redis {what} failed: {describe(exc)}; the group or its stream was deleted: "
            "subscribe again to create it (it then starts at the stream's end)"
        )
    if str(exc).startswith("WRONGTYPE"):
        return ConfigError("topic", f"{what}: the key holds another type than a stream")
    return PolybusError(f"Redis {what} failed: {describe(exc)}")


@contextlib.asynccontextmanager
async def bounded(seconds: float, what: str) -> AsyncIterator[None]:
    """Run the block within ``seconds`` (a timeout is an outage) and translate what
    redis-py raises."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except NATIVE as exc:
        raise translate(exc, what) from exc


def publish_error(exc: BaseException, topic: str, failed_ids: tuple[str, ...]) -> PublishError:
    return PublishError(
        f"publish to topic {topic!r} not confirmed for {len(failed_ids)} message(s): "
        f"{describe(exc)}",
        retryable=transient(exc),
        failed_ids=failed_ids,
    )

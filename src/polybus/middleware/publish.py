"""Producer-side retry: republish a batch the broker did not confirm.

Plugs into :class:`~polybus.Bus` as its ``publish_hook`` (``polybus.connect(url,
publish_retry=PublishRetry())``). Retries :class:`~polybus.errors.BrokerUnavailable`
and :class:`~polybus.errors.PublishError` with ``retryable`` set, with the same
jittered backoff as the consumer side; anything else (a too-large message, an
authorisation failure) is raised at once. The whole batch is sent again: its ids were
stamped before the first try, so adapters with broker deduplication drop the copies
that had been confirmed, and elsewhere consumers see at-least-once duplicates that
idempotency middleware absorbs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from .._backoff import Backoff
from ..errors import BrokerUnavailable, ConfigError, PublishError

__all__ = ["PublishRetry"]

log = logging.getLogger("polybus.middleware.publish")


def is_retryable_publish_error(exc: BaseException) -> bool:
    """True for errors a second publish of the same batch may cure."""
    if isinstance(exc, BrokerUnavailable):
        return True
    return isinstance(exc, PublishError) and exc.retryable


class PublishRetry:
    """A ``publish_hook``: up to ``max_attempts`` tries within ``max_elapsed`` seconds."""

    def __init__(
        self,
        *,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        max_elapsed: float = 30.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1:
            raise ConfigError("publish_retry.max_attempts", f"must be >= 1, got {max_attempts!r}")
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.max_elapsed = max_elapsed
        self.rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:
        return f"<PublishRetry max_attempts={self.max_attempts} {self.backoff!r}>"

    async def __call__(self, send: Callable[[], Awaitable[None]]) -> None:
        started = self._clock()
        previous: float | None = None
        attempt = 0
        while True:
            attempt += 1
            try:
                await send()
                return
            except Exception as exc:
                if not is_retryable_publish_error(exc) or attempt >= self.max_attempts:
                    raise
                delay = self.backoff.delay(attempt, self.rng, previous)
                if self._clock() - started + delay > self.max_elapsed:
                    raise
                log.warning(
                    "publish attempt %d failed (%s), retrying in %.3fs",
                    attempt,
                    type(exc).__name__,
                    delay,
                )
                previous = delay
                await self._sleep(delay)

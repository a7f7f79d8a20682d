"""Retry: jittered exponential backoff for transient handler errors.

Short waits happen in process (the message keeps its slot and its key's lane, so
per-key order holds); a wait longer than ``inline_max_delay`` goes back to the broker
with ``msg.nack(delay=...)`` so the stream is not blocked. What the broker is asked
for follows the delivering backend's :class:`~polybus.Capabilities`:

* ``max_delay`` set (SQS 12 h, Pub/Sub 600 s): the delay asked for is capped there,
  never refused by the broker nor silently shortened by the adapter;
* ``delayed_redelivery=False``: the broker cannot hold a message back, and a nack
  without delay would come straight back, burning the attempts in a hot loop. So the
  wait happens in process instead, the whole jittered delay (at most the backoff's
  ``max_delay``), holding the message's in-flight slot; a warning says so once.

Permanent errors
(:data:`~polybus.middleware.PERMANENT`, ``permanent=``, or ``retryable = False``)
are re-raised at once, never retried. When attempts or the total retry time run out,
:class:`RetriesExhausted` is raised from the last error, for the dead-letter
middleware to route.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from .._backoff import Backoff
from .._events import emit
from .._message import Message, now
from .._worker import Handler
from ..errors import ConfigError
from ._common import RetriesExhausted, capabilities_of, is_permanent

__all__ = ["Retry"]

log = logging.getLogger("polybus.middleware.retry")

_Key = tuple[str, str | None, str]


@dataclass(slots=True)
class _History:
    attempts: int
    first_failure: datetime
    started: float
    previous_delay: float | None = None


class Retry:
    """Retry transient failures with backoff; defaults 10 attempts, 0.1 s doubling to
    30 s with full jitter, at most ``max_elapsed`` seconds from the first failure.

    An attempt is one run of the handler. Attempts made before a broker redelivery are
    remembered in process (bounded by ``history_size``); after a crash the count
    restarts from the message's ``delivery_attempt`` (the poison guard, outside, is
    what stops a message that crashes the process every time). Waits longer than
    ``inline_max_delay`` go to the broker within its capabilities (see the module
    docstring). Each retry is logged: DEBUG in process, INFO through the broker.
    ``rng``, ``sleep`` and ``clock`` are injectable so schedules are deterministic in
    tests.
    """

    def __init__(
        self,
        *,
        max_attempts: int = 10,
        backoff: Backoff | None = None,
        max_elapsed: float = 300.0,
        inline_max_delay: float = 1.0,
        permanent: tuple[type[BaseException], ...] = (),
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        history_size: int = 10_000,
    ) -> None:
        if max_attempts < 1:
            raise ConfigError("max_attempts", f"must be >= 1, got {max_attempts!r}")
        if not max_elapsed > 0:
            raise ConfigError("max_elapsed", f"must be > 0, got {max_elapsed!r}")
        if not inline_max_delay >= 0:
            raise ConfigError("inline_max_delay", f"must be >= 0, got {inline_max_delay!r}")
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.max_elapsed = max_elapsed
        self.inline_max_delay = inline_max_delay
        self.permanent = permanent
        self.rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        self._history: OrderedDict[_Key, _History] = OrderedDict()
        self._history_size = history_size
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"<Retry max_attempts={self.max_attempts} {self.backoff!r}>"

    def __call__(self, handler: Handler) -> Handler:
        history = self._history

        async def retrying(msg: Message) -> None:
            try:
                await handler(msg)
            except Exception as exc:
                await self._failed(handler, msg, exc)
                return
            if history:
                history.pop((msg.topic, msg.group, msg.id), None)

        return retrying

    async def _failed(self, handler: Handler, msg: Message, exc: Exception) -> None:
        key = (msg.topic, msg.group, msg.id)
        past = self._history.pop(key, None)
        if past is None:
            past = _History(msg.delivery_attempt - 1, now(), self._clock())
        else:
            past.attempts = max(past.attempts, msg.delivery_attempt - 1)
        while True:
            if msg.settled:  # the handler settled it itself: its decision stands
                raise exc
            past.attempts += 1
            if is_permanent(exc, self.permanent):
                raise exc
            if past.attempts >= self.max_attempts:
                raise self._exhausted(msg, past) from exc
            delay = self.backoff.delay(past.attempts, self.rng, past.previous_delay)
            if self._clock() - past.started + delay > self.max_elapsed:
                raise self._exhausted(msg, past) from exc
            if delay > self.inline_max_delay and self._broker_can_wait(msg):
                await self._nack_later(msg, key, past, delay, exc)
                return
            past.previous_delay = delay
            emit("retry", topic=msg.topic, group=msg.group, where="process")
            log.debug(
                "retrying in process in %.3fs topic=%s group=%s id=%s attempt=%d error=%s",
                delay,
                msg.topic,
                msg.group,
                msg.id,
                past.attempts,
                type(exc).__name__,
            )
            await self._sleep(delay)
            try:
                await handler(msg)
            except Exception as again:
                exc = again
                continue
            return

    def _broker_can_wait(self, msg: Message) -> bool:
        """True unless the delivering backend declares no delayed redelivery."""
        caps = capabilities_of(msg)
        if caps is None or caps.delayed_redelivery:
            return True
        self._warn_once(
            "no-delay",
            "topic=%s group=%s: the backend has no delayed redelivery, so retry waits "
            "longer than inline_max_delay=%.3fs are held in process (up to max_delay=%.3fs "
            "each), keeping the message's in-flight slot",
            msg.topic,
            msg.group,
            self.inline_max_delay,
            self.backoff.max_delay,
        )
        return False

    async def _nack_later(
        self, msg: Message, key: _Key, past: _History, delay: float, exc: Exception
    ) -> None:
        """Hand the wait to the broker, capped at the backend's ``max_delay``."""
        caps = capabilities_of(msg)
        if caps is not None and caps.max_delay is not None:
            delay = self._capped(msg, delay, caps.max_delay)
        past.previous_delay = delay
        self._remember(key, past)
        emit("retry", topic=msg.topic, group=msg.group, where="broker")
        log.info(
            "retrying through the broker in %.3fs topic=%s group=%s id=%s attempt=%d error=%s",
            delay,
            msg.topic,
            msg.group,
            msg.id,
            past.attempts,
            type(exc).__name__,
        )
        await msg.nack(delay=delay)

    def _capped(self, msg: Message, delay: float, limit: float) -> float:
        """``delay`` within the backend's longest redelivery delay."""
        if delay <= limit:
            return delay
        self._warn_once(
            "capped",
            "topic=%s group=%s: retry delays are capped at the backend's max_delay=%gs "
            "(the backoff allows up to %gs)",
            msg.topic,
            msg.group,
            limit,
            self.backoff.max_delay,
        )
        return limit

    def _warn_once(self, what: str, text: str, *args: object) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(text, *args)

    def _exhausted(self, msg: Message, past: _History) -> RetriesExhausted:
        return RetriesExhausted(msg.id, past.attempts, past.first_failure, now())

    def _remember(self, key: _Key, past: _History) -> None:
        self._history[key] = past
        while len(self._history) > self._history_size:
            self._history.popitem(last=False)

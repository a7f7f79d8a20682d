"""Circuit breaker: when most recent messages fail, stop pulling and probe later.

A failing dependency (a database down, a bug in a new release) makes every message
fail; retrying and dead-lettering them all would empty the stream into the DLQ. The
breaker watches the outcome of the last ``window`` messages; when at least
``min_calls`` were seen and the failed share reaches ``failure_ratio`` it opens.

Open means: no message reaches the handler and none is settled. A message arriving
while open *waits* in the breaker, holding its in-flight slot; once the Worker's
``max_in_flight`` slots are held, the subscription stops fetching, so the rest stay on
the broker with their delivery count unchanged (a nack-with-delay design would churn
them and push them toward the poison-pill limit). After ``cooldown`` seconds one
waiting message goes through as a probe (half-open); success closes the breaker and
releases everyone, failure opens it for another cooldown. On shutdown the waiting
messages are cancelled with the Worker's in-flight tasks and go back to the broker.

A delivery counts as failed when the inner chain raises (except ``ignore``, by
default :class:`~polybus.errors.Reject`: a deliberate verdict on one message, not an
outage) or settles the message with a nack (a retry scheduled through the broker),
except a nack that is not a failure (the idempotency middleware deferring a twin).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from .._events import emit
from .._message import Message
from .._worker import Handler
from ..errors import ConfigError, Reject
from ._common import deferred

__all__ = ["CircuitBreaker"]

log = logging.getLogger("polybus.middleware.breaker")

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Pause consumption while the failure ratio is high; see the module docstring.

    ``on_change(old, new)`` is called on every state change (metrics, tests).
    """

    def __init__(
        self,
        *,
        window: int = 20,
        min_calls: int = 10,
        failure_ratio: float = 0.5,
        cooldown: float = 30.0,
        ignore: tuple[type[BaseException], ...] = (Reject,),
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State, State], None] | None = None,
    ) -> None:
        if window < 1:
            raise ConfigError("window", f"must be >= 1, got {window!r}")
        if not 1 <= min_calls <= window:
            raise ConfigError("min_calls", f"must be between 1 and window={window}")
        if not 0 < failure_ratio <= 1:
            raise ConfigError("failure_ratio", f"must be in (0, 1], got {failure_ratio!r}")
        if not cooldown > 0:
            raise ConfigError("cooldown", f"must be > 0, got {cooldown!r}")
        self.window = window
        self.min_calls = min_calls
        self.failure_ratio = failure_ratio
        self.cooldown = cooldown
        self.ignore = ignore
        self._clock = clock
        self._on_change = on_change
        self.state: State = "closed"
        self._outcomes: deque[bool] = deque()
        self._failures = 0
        self._opened_at = 0.0
        self._changed: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state} failures={self._failures}/{len(self._outcomes)}>"

    def __call__(self, handler: Handler) -> Handler:
        async def breaking(msg: Message) -> None:
            probe = False
            if self.state != "closed":
                probe = await self._admit()
            ok = False
            token = deferred.set(False)
            try:
                await handler(msg)
                ok = msg.settlement != "nack" or deferred.get()
            except Exception as exc:
                ok = isinstance(exc, self.ignore)
                raise
            finally:
                deferred.reset(token)
                self._record(ok, probe)

        return breaking

    async def _admit(self) -> bool:
        """Wait until a message may run; True if it runs as the half-open probe."""
        while True:
            if self.state == "closed":
                return False
            changed = self._changed
            if changed is None:
                changed = self._changed = asyncio.Event()
            timeout = None
            if self.state == "open":
                remaining = self._opened_at + self.cooldown - self._clock()
                if remaining <= 0:
                    self._set("half_open")
                    return True
                timeout = remaining
            try:
                async with asyncio.timeout(timeout):
                    await changed.wait()
            except TimeoutError:
                continue

    def _record(self, ok: bool, probe: bool) -> None:
        if probe:
            if ok:
                self._outcomes.clear()
                self._failures = 0
                self._set("closed")
            else:
                self._open()
            return
        if self.state != "closed":
            return  # a straggler that started before the breaker opened
        self._outcomes.append(ok)
        if not ok:
            self._failures += 1
        if len(self._outcomes) > self.window and not self._outcomes.popleft():
            self._failures -= 1
        seen = len(self._outcomes)
        if seen >= self.min_calls and self._failures >= self.failure_ratio * seen:
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        log.warning(
            "circuit breaker open: %d of the last %d messages failed; pausing for %.1fs",
            self._failures,
            len(self._outcomes),
            self.cooldown,
        )
        self._set("open")

    def _set(self, state: State) -> None:
        old, self.state = self.state, state
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()  # wake the waiters; they re-check the new state
        if old != state:
            emit("breaker_state", state=state, breaker=id(self))
            if self._on_change is not None:
                self._on_change(old, state)

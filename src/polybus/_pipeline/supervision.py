"""Supervision of one subscription's consumer: jittered exponential backoff between
attempts to reach the broker again, the ``reconnect_timeout`` rule, and health.

The rule, the same on every backend: a transient failure
(:class:`~polybus.errors.BrokerUnavailable`) is ridden out, retrying with the core
:class:`~polybus.spi.Backoff` (full jitter, 0.1 s doubling up to 5 s), until
``reconnect_timeout`` seconds have passed since the failure began; then it is raised.
``math.inf`` rides out outages of any length (what a :class:`~polybus.Worker` does).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from .._backoff import Backoff
from .._message import now
from ..errors import BrokerUnavailable

__all__ = ["RECONNECT_BACKOFF", "Health", "Supervisor"]

log = logging.getLogger("polybus.subscription")

RECONNECT_BACKOFF = Backoff(initial=0.1, multiplier=2.0, max_delay=5.0, jitter="full")
"""Waits between attempts to reach a broker again."""

State = Literal["starting", "running", "reconnecting", "closed"]


@dataclass(frozen=True, slots=True)
class Health:
    """One subscription's state, for liveness and readiness probes.

    ``state`` is ``starting`` (not consuming yet), ``running``, ``reconnecting``
    (the broker is unreachable; ``since`` says from when, ``last_error`` why) or
    ``closed``. ``reconnects`` counts the outages ridden out so far. ``time_lag`` is the
    consumer's own view of lag: seconds between publishing and receiving of the oldest
    message of the latest batch received (None before the first).
    """

    state: State
    since: datetime
    last_error: str | None = None
    reconnects: int = 0
    time_lag: float | None = None

    @property
    def healthy(self) -> bool:
        """True while running (a readiness probe's answer)."""
        return self.state == "running"


class Supervisor:
    """Backoff and health for one subscription. Not thread-safe (event loop)."""

    def __init__(
        self, where: str, reconnect_timeout: float, rng: random.Random | None = None
    ) -> None:
        self.where = where
        self.reconnect_timeout = reconnect_timeout
        self._rng = rng or random.Random()
        self._attempt = 0
        self._failing_since: float | None = None
        self.health = Health("starting", now())

    def running(self) -> None:
        """The consumer delivered (or opened): the outage, if any, is over."""
        if self.health.state == "running":
            return
        if self._failing_since is not None:
            log.info(
                "%s: the broker is back after %.1fs",
                self.where,
                time.monotonic() - self._failing_since,
            )
        self._attempt = 0
        self._failing_since = None
        self.health = Health("running", now(), self.health.last_error, self.health.reconnects)

    def failed(self, exc: BrokerUnavailable) -> float:
        """Record a transient failure; return how long to wait before the next attempt.
        Raise ``exc`` once the outage has lasted ``reconnect_timeout`` seconds."""
        moment = time.monotonic()
        if self._failing_since is None:
            self._failing_since = moment
            log.warning("%s: broker unavailable, reconnecting: %s", self.where, exc)
            self.health = Health("reconnecting", now(), str(exc), self.health.reconnects + 1)
        else:
            self.health = Health(
                "reconnecting", self.health.since, str(exc), self.health.reconnects
            )
        limit = self.reconnect_timeout
        if moment - self._failing_since >= limit:
            self._failing_since = None
            self._attempt = 0
            raise BrokerUnavailable(
                f"{self.where}: the broker stayed unavailable for {limit:g}s "
                f"(reconnect_timeout): {exc}"
            ) from exc
        self._attempt += 1
        delay = RECONNECT_BACKOFF.delay(self._attempt, self._rng)
        if limit != float("inf"):
            delay = min(delay, max(0.0, self._failing_since + limit - moment))
        return delay

    def closed(self) -> None:
        self.health = Health("closed", now(), self.health.last_error, self.health.reconnects)

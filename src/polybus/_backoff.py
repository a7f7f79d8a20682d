"""Backoff schedules: pure functions of the attempt number and a random source.

No I/O and no clock here, so a schedule is tested without an event loop and is
reproducible under a seeded :class:`random.Random`. ``attempt`` is 1-based: the delay
after the first failed attempt uses ``attempt=1``.

* full jitter (the default): ``random(0, cap(attempt))``
* equal jitter: ``cap/2 + random(0, cap/2)``
* decorrelated jitter: ``min(max_delay, random(initial, previous * 3))``

where ``cap(attempt) = min(initial * multiplier ** (attempt - 1), max_delay)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigError

__all__ = [
    "Backoff",
    "Jitter",
    "ceiling",
    "decorrelated_jitter",
    "equal_jitter",
    "full_jitter",
]

Jitter = Literal["full", "equal", "decorrelated"]
JITTERS: tuple[Jitter, ...] = ("full", "equal", "decorrelated")


def ceiling(attempt: int, initial: float, multiplier: float, max_delay: float) -> float:
    """The un-jittered exponential delay after ``attempt``, capped at ``max_delay``."""
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    # cap the exponent first: multiplier ** 10_000 would overflow a float
    exponent = attempt - 1
    if multiplier > 1 and initial > 0:
        value = initial
        for _ in range(exponent):
            value *= multiplier
            if value >= max_delay:
                return max_delay
        return min(value, max_delay)
    return min(initial * multiplier**exponent, max_delay)


def full_jitter(
    attempt: int, initial: float, multiplier: float, max_delay: float, rng: random.Random
) -> float:
    """A delay drawn uniformly from ``[0, ceiling(attempt)]``."""
    return rng.uniform(0.0, ceiling(attempt, initial, multiplier, max_delay))


def equal_jitter(
    attempt: int, initial: float, multiplier: float, max_delay: float, rng: random.Random
) -> float:
    """Half the ceiling fixed, half random: ``[cap/2, cap]``; never retries at once."""
    half = ceiling(attempt, initial, multiplier, max_delay) / 2
    return half + rng.uniform(0.0, half)


def decorrelated_jitter(
    previous: float | None, initial: float, max_delay: float, rng: random.Random
) -> float:
    """A delay drawn from ``[initial, 3 * previous]`` (``previous`` defaults to
    ``initial``), capped at ``max_delay``: grows like the exponential schedule on
    average but each delay depends on the last one instead of the attempt number."""
    last = initial if previous is None else max(previous, initial)
    return min(max_delay, rng.uniform(initial, last * 3))


@dataclass(frozen=True, slots=True)
class Backoff:
    """A backoff policy. The defaults are the issue's: 0.1 s, doubling, at most 30 s,
    full jitter. ``delay`` is pure given ``rng``."""

    initial: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        if not self.initial >= 0:
            raise ConfigError("initial", f"must be >= 0, got {self.initial!r}")
        if not self.multiplier >= 1:
            raise ConfigError("multiplier", f"must be >= 1, got {self.multiplier!r}")
        if not self.max_delay >= self.initial:
            raise ConfigError("max_delay", f"must be >= initial, got {self.max_delay!r}")
        if self.jitter not in JITTERS:
            raise ConfigError("jitter", f"{self.jitter!r} is not one of {list(JITTERS)}")

    def delay(self, attempt: int, rng: random.Random, previous: float | None = None) -> float:
        """The wait after failed attempt number ``attempt`` (1-based). ``previous`` is
        the last delay used, needed by decorrelated jitter only."""
        if self.jitter == "full":
            return full_jitter(attempt, self.initial, self.multiplier, self.max_delay, rng)
        if self.jitter == "equal":
            return equal_jitter(attempt, self.initial, self.multiplier, self.max_delay, rng)
        return decorrelated_jitter(previous, self.initial, self.max_delay, rng)

    def bounds(self, attempt: int, previous: float | None = None) -> tuple[float, float]:
        """The interval every :meth:`delay` for ``attempt`` falls into."""
        cap = ceiling(attempt, self.initial, self.multiplier, self.max_delay)
        if self.jitter == "full":
            return 0.0, cap
        if self.jitter == "equal":
            return cap / 2, cap
        last = self.initial if previous is None else max(previous, self.initial)
        return min(self.initial, self.max_delay), min(self.max_delay, last * 3)

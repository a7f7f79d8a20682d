"""Backoff schedules are pure: bounds and determinism, without an event loop."""

from __future__ import annotations

import random

import pytest

from polybus._backoff import (
    Backoff,
    ceiling,
    decorrelated_jitter,
    equal_jitter,
    full_jitter,
)
from polybus.errors import ConfigError


def test_ceiling_doubles_from_initial_and_caps() -> None:
    assert [ceiling(a, 0.1, 2, 30) for a in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert ceiling(20, 0.1, 2, 30) == 30
    assert ceiling(10_000, 0.1, 2, 30) == 30  # no float overflow


def test_ceiling_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="1-based"):
        ceiling(0, 0.1, 2, 30)


@pytest.mark.parametrize("attempt", [1, 2, 5, 9, 15])
def test_full_jitter_stays_in_zero_to_ceiling(attempt: int) -> None:
    rng = random.Random(7)
    cap = ceiling(attempt, 0.1, 2, 30)
    draws = [full_jitter(attempt, 0.1, 2, 30, rng) for _ in range(2000)]
    assert all(0 <= d <= cap for d in draws)
    # full jitter spreads over the whole range, not just near the cap
    assert min(draws) < cap * 0.1
    assert max(draws) > cap * 0.9


@pytest.mark.parametrize("attempt", [1, 3, 12])
def test_equal_jitter_stays_in_upper_half(attempt: int) -> None:
    rng = random.Random(8)
    cap = ceiling(attempt, 0.1, 2, 30)
    draws = [equal_jitter(attempt, 0.1, 2, 30, rng) for _ in range(2000)]
    assert all(cap / 2 <= d <= cap for d in draws)


def test_decorrelated_jitter_grows_from_previous_and_caps() -> None:
    rng = random.Random(9)
    previous = None
    for _ in range(50):
        d = decorrelated_jitter(previous, 0.1, 5.0, rng)
        low = 0.1
        high = min(5.0, 3 * (previous if previous is not None else 0.1))
        assert low <= d <= max(high, low)
        previous = d
    assert previous is not None
    assert previous <= 5.0


@pytest.mark.parametrize("jitter", ["full", "equal", "decorrelated"])
def test_seeded_schedules_are_reproducible_and_within_bounds(jitter: str) -> None:
    policy = Backoff(initial=0.1, multiplier=2, max_delay=3, jitter=jitter)  # type: ignore[arg-type]

    def schedule(seed: int) -> list[float]:
        rng, prev, out = random.Random(seed), None, []
        for attempt in range(1, 12):
            d = policy.delay(attempt, rng, prev)
            low, high = policy.bounds(attempt, prev)
            assert low <= d <= high
            out.append(d)
            prev = d
        return out

    assert schedule(1) == schedule(1)
    assert schedule(1) != schedule(2)


def test_defaults_match_the_issue() -> None:
    b = Backoff()
    assert (b.initial, b.multiplier, b.max_delay, b.jitter) == (0.1, 2.0, 30.0, "full")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial": -1}, "initial"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"max_delay": 0.01}, "max_delay"),
        ({"jitter": "none"}, "jitter"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Backoff(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field

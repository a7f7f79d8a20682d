"""Retry within the delivering backend's capabilities, on memory://.

memory:// has delayed redelivery and no delay limit. To exercise backends that differ
(no delayed redelivery; SQS's and Pub/Sub's ``max_delay``) the test bus declares a
changed :class:`~polybus.Capabilities` value: the broker underneath is still the real
memory:// one, and Retry finds the declaration where it always does, on the bus that
delivered the message.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any

import pytest

import polybus
from polybus import Message
from polybus import headers as h
from polybus.middleware import Backoff, DeadLetter, Retry

from .helpers import memory_url, running, until, wait_dead_letters

LOGGER = "polybus.middleware.retry"


class Recorder:
    """A fake sleep that records the in-process waits instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def declare(bus: polybus.Bus, **changes: Any) -> None:
    """Make ``bus`` declare capabilities changed by ``changes``."""
    bus.adapter.capabilities = dataclasses.replace(bus.capabilities, **changes)


def broker_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The delays Retry asked the broker for, in order (from its INFO lines)."""
    return [
        float(r.args[0])  # type: ignore[index,arg-type]
        for r in caplog.records
        if r.name == LOGGER and r.getMessage().startswith("retrying through the broker")
    ]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
    ]


def seeded(backoff: Backoff, seed: int, attempts: int) -> list[float]:
    rng = random.Random(seed)
    return [backoff.delay(a, rng) for a in range(1, attempts + 1)]


async def fail_until_dead(
    bus: polybus.Bus, retry: Retry, *, key: str | None = "k1"
) -> tuple[list[int], Message]:
    """Run a handler that always fails transiently; return the delivery attempts it
    saw and the dead letter it ended as."""
    attempts: list[int] = []

    async def handler(msg: Message) -> None:
        attempts.append(msg.delivery_attempt)
        raise ConnectionError("dependency down")

    async with running(bus, [DeadLetter(), retry], handler):
        await bus.publish("orders", b"x", key=key)
        (dead,) = await wait_dead_letters(bus, 1)
    await until(lambda: len(attempts) == retry.max_attempts, what="every attempt ran")
    return attempts, dead


# equal jitter: every delay is at least half its ceiling, so all exceed inline_max_delay
SMALL = Backoff(initial=0.02, multiplier=2, max_delay=0.04, jitter="equal")


async def test_long_waits_go_to_the_broker_uncapped_when_it_has_no_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sleep = Recorder()
    retry = Retry(
        max_attempts=3, backoff=SMALL, inline_max_delay=0.005, rng=random.Random(5), sleep=sleep
    )
    async with polybus.connect(memory_url()) as bus:
        assert bus.capabilities.delayed_redelivery
        assert bus.capabilities.max_delay is None
        attempts, dead = await fail_until_dead(bus, retry)
    assert attempts == [1, 2, 3]  # each retry was a broker redelivery
    assert sleep.delays == []
    assert broker_delays(caplog) == seeded(SMALL, 5, 2)  # exactly the schedule's delays
    assert warnings(caplog) == []
    assert dead.headers[h.DLQ_ATTEMPTS] == "3"


async def test_delays_are_capped_at_the_backends_max_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    long = Backoff(initial=2.0, multiplier=2, max_delay=60.0, jitter="equal")  # >= 1 s
    retry = Retry(max_attempts=4, backoff=long, inline_max_delay=0.5, rng=random.Random(9))
    async with polybus.connect(memory_url()) as bus:
        declare(bus, max_delay=0.03)  # as SQS (12 h) or Pub/Sub (600 s), scaled down
        attempts, dead = await fail_until_dead(bus, retry)
    assert attempts == [1, 2, 3, 4]  # through the broker, not in process
    assert broker_delays(caplog) == [0.03, 0.03, 0.03]
    (warning,) = warnings(caplog)  # said once, not once per message
    assert "capped at the backend's max_delay=0.03s" in warning
    assert dead.headers[h.DLQ_ATTEMPTS] == "4"


async def test_without_delayed_redelivery_long_waits_stay_in_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sleep = Recorder()
    retry = Retry(
        max_attempts=4, backoff=SMALL, inline_max_delay=0.005, rng=random.Random(5), sleep=sleep
    )
    async with polybus.connect(memory_url()) as bus:
        declare(bus, delayed_redelivery=False)
        attempts, dead = await fail_until_dead(bus, retry)
    assert attempts == [1, 1, 1, 1]  # one broker delivery: never nacked to come back
    assert sleep.delays == seeded(SMALL, 5, 3)  # the whole schedule, waited in process
    assert all(d > retry.inline_max_delay for d in sleep.delays)
    assert broker_delays(caplog) == []
    (warning,) = warnings(caplog)
    assert "no delayed redelivery" in warning
    assert "topic=orders group=g" in warning
    assert dead.headers[h.DLQ_ATTEMPTS] == "4"

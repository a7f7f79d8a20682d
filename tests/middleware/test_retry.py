"""Retry on memory://: counts, seeded delays, permanent errors, broker redelivery."""

from __future__ import annotations

import random
from datetime import datetime

import pytest

import polybus
from polybus import Message, Middleware
from polybus import headers as h
from polybus.errors import ConfigError, Reject, SerializationError
from polybus.middleware import Backoff, DeadLetter, Retry

from .helpers import drain_dead_letters, memory_url, running, until


class Recorder:
    """A fake sleep that records the delays asked for instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_transient_errors_are_retried_with_the_seeded_schedule() -> None:
    sleep = Recorder()
    retry = Retry(max_attempts=5, rng=random.Random(42), sleep=sleep, inline_max_delay=60)
    calls: list[int] = []

    async def handler(msg: Message) -> None:
        calls.append(msg.delivery_attempt)
        raise ConnectionError("database down")

    async with polybus.connect(memory_url()) as bus:
        async with running(bus, [DeadLetter(), retry], handler):
            await bus.publish("orders", {"n": 1})
            await until(lambda: len(calls) == 5 and len(sleep.delays) == 4, what="5 attempts")
        dead = await drain_dead_letters(bus)

    assert calls == [1, 1, 1, 1, 1]  # all in process: one broker delivery
    expected_rng = random.Random(42)
    policy = Backoff()
    expected = [policy.delay(a, expected_rng) for a in range(1, 5)]
    assert sleep.delays == expected
    for attempt, delay in enumerate(sleep.delays, start=1):
        assert 0 <= delay <= min(0.1 * 2 ** (attempt - 1), 30)
    assert len(dead) == 1
    assert dead[0].headers[h.DLQ_ATTEMPTS] == "5"
    assert dead[0].headers[h.DLQ_REASON] == "retries exhausted after 5 attempts"
    assert dead[0].headers[h.DLQ_ERROR_TYPE] == "builtins.ConnectionError"


async def test_success_after_transient_failures_acks_without_dead_letter() -> None:
    sleep = Recorder()
    calls = 0

    async def handler(msg: Message) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TimeoutError("slow dependency")

    retry = Retry(rng=random.Random(1), sleep=sleep)
    done: list[str] = []

    async def record(msg: Message) -> None:
        await handler(msg)
        done.append(msg.id)

    async with polybus.connect(memory_url()) as bus:
        async with running(bus, [DeadLetter(), retry], record):
            await bus.publish("orders", "x")
            await until(lambda: len(done) == 1, what="processed")
        assert await drain_dead_letters(bus) == []
    assert calls == 3
    assert len(sleep.delays) == 2


@pytest.mark.parametrize(
    "error",
    [Reject("bad order"), SerializationError("not json"), ValueError("app says permanent")],
)
async def test_permanent_errors_are_never_retried(error: Exception) -> None:
    sleep = Recorder()
    calls = 0

    async def handler(msg: Message) -> None:
        nonlocal calls
        calls += 1
        raise error

    mw: list[Middleware] = [
        DeadLetter(permanent=(ValueError,)),
        Retry(sleep=sleep, permanent=(ValueError,)),
    ]
    async with polybus.connect(memory_url()) as bus:
        async with running(bus, mw, handler):
            await bus.publish("orders", b"payload")
            dead: list[Message] = []

            async def collect() -> None:
                dead.extend(await drain_dead_letters(bus, idle=0.05))

            for _ in range(200):
                await collect()
                if dead:
                    break
        assert len(dead) == 1
    assert calls == 1
    assert sleep.delays == []
    assert dead[0].headers[h.DLQ_ATTEMPTS] == "1"


async def test_long_delays_go_back_to_the_broker_and_attempts_keep_counting() -> None:
    # inline_max_delay=0: every retry is a nack(delay=...) and a broker redelivery
    retry = Retry(
        max_attempts=3,
        backoff=Backoff(initial=0.01, max_delay=0.02),
        inline_max_delay=0,
        rng=random.Random(3),
    )
    attempts: list[int] = []

    async def handler(msg: Message) -> None:
        attempts.append(msg.delivery_attempt)
        raise ConnectionError("still down")

    async with (
        polybus.connect(memory_url()) as bus,
        running(bus, [DeadLetter(), retry], handler),
    ):
        await bus.publish("orders", "x", key="k1")
        await until(lambda: len(attempts) == 3, what="three deliveries")
        dead: list[Message] = []
        for _ in range(200):
            dead.extend(await drain_dead_letters(bus, idle=0.05))
            if dead:
                break
    assert attempts == [1, 2, 3]  # redelivered by the broker each time
    assert len(dead) == 1
    first = datetime.fromisoformat(dead[0].headers[h.DLQ_FIRST_FAILURE])
    last = datetime.fromisoformat(dead[0].headers[h.DLQ_LAST_FAILURE])
    assert first < last
    assert dead[0].headers[h.DLQ_ATTEMPTS] == "3"


async def test_total_retry_time_is_capped() -> None:
    now = [0.0]
    sleep_calls: list[float] = []

    async def sleep(delay: float) -> None:
        sleep_calls.append(delay)
        now[0] += delay

    retry = Retry(
        max_attempts=100,
        max_elapsed=1.0,
        backoff=Backoff(initial=0.3, multiplier=1, max_delay=0.3, jitter="equal"),
        rng=random.Random(0),
        sleep=sleep,
        clock=lambda: now[0],
    )
    calls = 0

    async def handler(msg: Message) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    async with (
        polybus.connect(memory_url()) as bus,
        running(bus, [DeadLetter(), retry], handler),
    ):
        await bus.publish("orders", "x")
        dead: list[Message] = []
        for _ in range(200):
            dead.extend(await drain_dead_letters(bus, idle=0.05))
            if dead:
                break
    assert sum(sleep_calls) <= 1.0
    assert calls == len(sleep_calls) + 1
    assert 3 <= calls <= 7  # 0.15..0.3 s per wait within 1 s
    assert dead[0].headers[h.DLQ_ATTEMPTS] == str(calls)


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        Retry(max_attempts=0)
    assert info.value.field == "max_attempts"

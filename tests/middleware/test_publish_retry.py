"""Producer-side retry through Bus.publish_hook, on memory://."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest

import polybus
from polybus.errors import BrokerUnavailable, MessageTooLarge, PublishError
from polybus.middleware import Backoff, PublishRetry

from .helpers import memory_url


def recording_sleep(into: list[float]) -> Callable[[float], Awaitable[None]]:
    async def sleep(delay: float) -> None:
        into.append(delay)

    return sleep


@pytest.mark.parametrize(
    "error",
    [PublishError("leader moved", retryable=True), BrokerUnavailable("connection reset")],
)
async def test_retryable_publish_errors_are_retried_with_backoff(error: Exception) -> None:
    delays: list[float] = []
    retry = PublishRetry(max_attempts=4, rng=random.Random(11), sleep=recording_sleep(delays))
    calls = 0
    async with polybus.connect(memory_url(), publish_retry=retry) as bus:
        inner = bus.publish_hook
        assert inner is retry

        # a fault injected between the retry and the adapter: the first two sends fail
        async def flaky_hook(send: Callable[[], Awaitable[None]]) -> None:
            async def failing_send() -> None:
                nonlocal calls
                calls += 1
                if calls <= 2:
                    raise error
                await send()

            await retry(failing_send)

        bus.publish_hook = flaky_hook
        await bus.declare("orders", "g")
        sent = await bus.publish("orders", b"x")
        async with bus.subscribe("orders", group="g") as sub:
            msg = await sub.get(timeout=5)
            await msg.ack()
    assert msg.id == sent
    assert calls == 3
    rng = random.Random(11)
    assert delays == [Backoff().delay(1, rng), Backoff().delay(2, rng)]


async def test_permanent_publish_errors_are_not_retried() -> None:
    delays: list[float] = []
    retry = PublishRetry(sleep=recording_sleep(delays))
    async with polybus.connect(memory_url() + "?max_message_size=64", publish_retry=retry) as bus:
        with pytest.raises(MessageTooLarge):
            await bus.publish("orders", b"x" * 100)
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise PublishError("not authorised", retryable=False)

    with pytest.raises(PublishError, match="not authorised"):
        await retry(refused)
    assert calls == 1
    assert delays == []


async def test_attempts_are_bounded() -> None:
    delays: list[float] = []
    retry = PublishRetry(max_attempts=3, sleep=recording_sleep(delays))
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise BrokerUnavailable("down")

    with pytest.raises(BrokerUnavailable):
        await retry(down)
    assert calls == 3
    assert len(delays) == 2


def test_connect_true_installs_the_default_retry() -> None:
    bus = polybus.connect(memory_url(), publish_retry=True)
    assert isinstance(bus.publish_hook, PublishRetry)
    assert polybus.connect(memory_url()).publish_hook is None

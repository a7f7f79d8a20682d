"""A consumer the broker pushes to tells the core when deliveries arrived
(``Consumer.watch``): the core takes them at once, without a pending receive, within
``max_in_flight``, and still learns of a failure (then the consumer is replaced).

The push consumer here is memory:// behind a pump that buffers up to a prefetch of
deliveries and calls ``ready`` from its own task, as RabbitMQ's delivery callback does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

import polybus
from polybus.errors import BrokerUnavailable
from polybus.spi import Consumer, GroupSpec, Message, Ready
from polybus_memory import MemoryAdapter

from .helpers import QUIET, WAIT, name


class PushConsumer(Consumer):
    """memory:// deliveries pumped into a buffer of at most ``prefetch`` unsettled ones."""

    def __init__(self, inner: Consumer, prefetch: int) -> None:
        self.inner = inner
        self.prefetch = prefetch
        self.buffer: deque[Message] = deque()
        self.held = 0
        """Buffered or handed out, not settled (what a broker's prefetch counts)."""
        self.notify: Ready | None = None
        self.failure: BrokerUnavailable | None = None
        self.receives = 0
        self.changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.inner.open()
        self._pump = asyncio.ensure_future(self._run())

    def watch(self, ready: Ready) -> bool:
        self.notify = ready
        return True

    async def _run(self) -> None:
        while True:
            while self.held >= self.prefetch:
                self.changed.clear()
                await self.changed.wait()
            batch = await self.inner.receive(self.prefetch - self.held)
            self.held += len(batch)
            self.buffer.extend(batch)
            self.changed.set()
            if self.notify is not None:
                self.notify()

    def fail(self) -> None:
        """The connection is lost: buffered deliveries are dropped (the broker has them)."""
        self.failure = BrokerUnavailable("push consumer: connection lost")
        self.buffer.clear()
        if self._pump is not None:
            self._pump.cancel()
        self.changed.set()
        if self.notify is not None:
            self.notify(failed=True)

    async def receive(self, max_messages: int) -> Sequence[Message]:
        self.receives += 1
        while True:
            if self.failure is not None:
                raise self.failure
            if self.buffer:
                return self.poll(max_messages)
            self.changed.clear()
            await self.changed.wait()

    def poll(self, max_messages: int) -> Sequence[Message]:
        if self.failure is not None:
            return ()
        count = min(max_messages, len(self.buffer))
        return [self.buffer.popleft() for _ in range(count)]

    async def ack(self, messages: Sequence[Message]) -> None:
        if self.failure is not None:
            raise self.failure
        await self.inner.ack(messages)
        self.held -= len(messages)
        self.changed.set()

    async def nack(self, message: Message, delay: float | None) -> None:
        if self.failure is not None:
            raise self.failure
        await self.inner.nack(message, delay)
        self.held -= 1
        self.changed.set()

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        await self.inner.close()  # what it held goes back to the group


class PushMemory(MemoryAdapter):
    """memory:// whose consumers are :class:`PushConsumer` (prefetch: ``max_in_flight``
    unless set), kept in ``made``."""

    def __init__(self, broker_name: str, settings: Any) -> None:
        super().__init__(broker_name, settings)
        self.prefetch: int | None = None
        self.made: list[PushConsumer] = []

    def consumer(self, group: GroupSpec, *, max_in_flight: int) -> Consumer:
        inner = super().consumer(group, max_in_flight=max_in_flight)
        made = PushConsumer(inner, self.prefetch or max_in_flight)
        self.made.append(made)
        return made


@pytest.fixture
def push() -> PushMemory:
    adapter = PushMemory.from_url("memory://", {})
    assert isinstance(adapter, PushMemory)
    return adapter


@contextlib.asynccontextmanager
async def subscribed(
    push: PushMemory, bodies: list[bytes], max_in_flight: int = 64
) -> AsyncIterator[tuple[polybus.Bus, polybus.Subscription, list[str]]]:
    """A bus on ``push``, ``bodies`` published to a fresh topic, a subscription to it."""
    topic = name()
    async with polybus.Bus(push) as bus:
        await bus.declare(topic, "g")
        ids = await bus.publish_many(topic, bodies) if bodies else []
        async with bus.subscribe(topic, group="g", max_in_flight=max_in_flight) as sub:
            yield bus, sub, ids


async def test_deliveries_are_taken_without_a_receive_and_within_max_in_flight(
    push: PushMemory,
) -> None:
    bodies = [f"m{i}".encode() for i in range(40)]
    async with subscribed(push, bodies, max_in_flight=4) as (_, sub, ids):
        got: list[str] = []
        peak = 0
        while len(got) < len(ids):
            batch = await sub.get_many(timeout=WAIT)
            peak = max(peak, sub.unsettled)
            got += [m.id for m in batch]
            await sub.ack_many(batch)
        (consumer,) = push.made
        assert consumer.receives == 0, "a watched consumer is never waited on"
    assert got == ids
    assert peak <= 4


async def test_a_delivery_reaches_a_waiting_get(push: PushMemory) -> None:
    async with subscribed(push, []) as (bus, sub, _):
        waiting = asyncio.ensure_future(sub.get(timeout=WAIT))
        await asyncio.sleep(QUIET)  # absence: nothing was published, the get waits
        assert not waiting.done()
        sent = await bus.publish(sub.topic, b"late")
        msg = await waiting
        await msg.ack()
        assert push.made[0].receives == 0, "taken from the consumer's call, not a receive"
    assert msg.id == sent


async def test_a_failed_consumer_is_replaced_and_its_messages_come_back(
    push: PushMemory,
) -> None:
    async with subscribed(push, [b"a", b"b", b"c"], max_in_flight=8) as (_, sub, ids):
        first = await sub.get(timeout=WAIT)
        push.made[0].fail()  # with free slots: the core hears it at once
        with pytest.raises(BrokerUnavailable):
            await first.ack()
        seen: list[str] = []
        while set(seen) != set(ids):
            msg = await sub.get(timeout=WAIT)
            seen.append(msg.id)
            await msg.ack()
        assert len(push.made) == 2, "a fresh consumer replaced the failed one"
        assert push.made[1].receives <= 1  # the reopen's first receive at most


async def test_a_failure_told_while_no_slot_is_free_is_not_lost(push: PushMemory) -> None:
    async with subscribed(push, [b"only"], max_in_flight=1) as (_, sub, ids):
        held = await sub.get(timeout=WAIT)
        push.made[0].fail()  # every slot taken: the core cannot act on it yet
        with pytest.raises(BrokerUnavailable):
            await held.ack()  # the slot is free again; the failure must surface
        again = await sub.get(timeout=WAIT)  # from a fresh consumer
        await again.ack()
    assert again.id == ids[0]
    assert again.delivery_attempt == 2
    assert len(push.made) == 2


async def test_deliveries_beyond_the_free_slots_wait_in_the_consumer(push: PushMemory) -> None:
    push.prefetch = 10  # the broker pushes more than the subscription may hold
    bodies = [f"m{i}".encode() for i in range(10)]
    async with subscribed(push, bodies, max_in_flight=2) as (_, sub, ids):
        got = []
        for _ in ids:
            msg = await sub.get(timeout=WAIT)
            assert sub.unsettled <= 2
            got.append(msg)
            if len(got) >= 2:
                await got[-2].ack()
        await got[-1].ack()
    assert [m.id for m in got] == ids

"""The memory:// backend itself: named shared brokers, no unbounded bookkeeping."""

from __future__ import annotations

import pytest

import polybus
from polybus_memory import MemoryAdapter

from .helpers import WAIT, name


async def test_buses_with_the_same_broker_name_share_topics(url: str) -> None:
    topic = name()
    async with (
        polybus.connect(url) as producer,
        polybus.connect(url) as consumer,
        consumer.subscribe(topic, group="g") as sub,
    ):
        sent = await producer.publish(topic, b"shared")
        msg = await sub.get(timeout=WAIT)
        await msg.ack()
    assert msg.id == sent


async def test_different_broker_names_are_isolated(url: str) -> None:
    topic = name()
    async with (
        polybus.connect(url) as one,
        polybus.connect(url + "other") as two,
        two.subscribe(topic, group="g") as sub,
    ):
        await one.declare(topic, "g")
        await one.publish(topic, b"elsewhere")
        with pytest.raises(TimeoutError):
            await sub.get(timeout=0.2)


async def test_idle_polling_leaves_no_stale_waiters(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        for _ in range(20):
            with pytest.raises(TimeoutError):
                await sub.get(timeout=0.001)
        assert isinstance(bus.adapter, MemoryAdapter)
        # the one receive a timed-out get leaves running waits; no waiter piles up
        assert len(bus.adapter.broker.topics[topic]["g"].waiters) <= 1
    assert bus.adapter.broker.topics[topic]["g"].waiters == []


def test_capabilities_are_declared(bus: polybus.Bus) -> None:
    caps = bus.capabilities
    assert caps.missing("key_order", "key_order_competing") == []
    assert caps.missing("fan_out", "competing_consumers", "delayed_redelivery") == []
    assert caps.missing("persistent", "replay", "broker_dedup") == [
        "persistent",
        "replay",
        "broker_dedup",
    ]
    assert bus.backend == "memory"

"""Catalogue 2, 3, 5, 6, 15: nothing is lost, every group gets its own topic's messages."""

from __future__ import annotations

import asyncio

import pytest

from polybus import Message, Outgoing
from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.markers import needs
from polybus_conformance.waiting import collect_ids, consume_concurrently, expect_nothing

pytestmark = pytest.mark.asyncio


async def test_persistence_without_consumer(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """2 persistence: messages published while no consumer runs are delivered later"""
    topic, group = polybus_names.topic(), polybus_names.group()
    creator = await polybus_bus_factory()
    await creator.declare(topic, group)
    await creator.close()  # the group exists; no client of it is connected any more
    producer = await polybus_bus_factory()
    ids = await producer.publish_many(topic, [f"offline-{i}" for i in range(20)])
    await producer.close()
    consumer = await polybus_bus_factory()
    async with consumer.subscribe(topic, group=group) as sub:
        received = await collect_ids(sub, ids, idle_timeout=polybus_target.profile.idle_timeout)
    assert {m.id for m in received} == set(ids)


# No capability needed: with a single active consumer the other four stand by, and
# still nothing may be lost.
async def test_no_loss_under_concurrency(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """3 no loss: 20 concurrent publishers, 5 consumers in one group, all N delivered"""
    topic, group = polybus_names.topic(), polybus_names.group()
    n = polybus_target.profile.volume
    publishers = 20
    consumer_buses = [await polybus_bus_factory() for _ in range(5)]
    producer_buses = [await polybus_bus_factory() for _ in range(2)]
    await consumer_buses[0].declare(topic, group)
    published: list[str] = []
    received: set[str] = set()
    publishing_done = False

    async def publisher(index: int) -> None:
        bus = producer_buses[index % len(producer_buses)]
        for j in range(index, n, publishers):
            published.append(await bus.publish(topic, f"m-{j}"))

    async def on_message(index: int, msg: Message) -> None:
        received.add(msg.id)
        await msg.ack()

    subs = [b.subscribe(topic, group=group, max_in_flight=16) for b in consumer_buses]
    for sub in subs:
        await sub.open()
    try:

        async def publish_all() -> None:
            nonlocal publishing_done
            await asyncio.gather(*(publisher(i) for i in range(publishers)))
            publishing_done = True

        send_task = asyncio.create_task(publish_all())
        await consume_concurrently(
            subs,
            on_message,
            lambda: publishing_done and received >= set(published),
            idle_timeout=polybus_target.profile.idle_timeout,
            progress=lambda: (
                f"{len(received & set(published))} of {n} delivered ({len(published)} published)"
            ),
        )
        await send_task
    finally:
        for sub in subs:
            await sub.close()
    assert len(published) == n
    assert received == set(published), "every published message must be delivered"


@needs("fan_out")
async def test_fan_out(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """5 fan-out: two groups of one topic each receive all N"""
    topic, first, second = polybus_names.topic(), polybus_names.group("a"), polybus_names.group("b")
    producer = await polybus_bus_factory()
    await producer.declare(topic, first)
    await producer.declare(topic, second)
    ids = await producer.publish_many(
        topic, [f"fan-{i}" for i in range(polybus_target.profile.volume)]
    )
    for group in (first, second):
        consumer = await polybus_bus_factory()
        async with consumer.subscribe(topic, group=group) as sub:
            received = await collect_ids(sub, ids, idle_timeout=polybus_target.profile.idle_timeout)
        assert {m.id for m in received} == set(ids), f"group {group} missed messages"


async def test_topic_isolation(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """6 topic isolation: a group receives only its own topic's messages"""
    topic_a, topic_b, group = (
        polybus_names.topic("a"),
        polybus_names.topic("b"),
        polybus_names.group(),
    )
    producer = await polybus_bus_factory()
    await producer.declare(topic_a, group)
    await producer.declare(topic_b, group)  # the same group name on the other topic
    ids_a = await producer.publish_many(topic_a, [f"a-{i}" for i in range(10)])
    ids_b = await producer.publish_many(topic_b, [f"b-{i}" for i in range(10)])
    profile = polybus_target.profile
    for topic, ids in ((topic_a, ids_a), (topic_b, ids_b)):
        consumer = await polybus_bus_factory()
        async with consumer.subscribe(topic, group=group) as sub:
            received = await collect_ids(sub, ids, idle_timeout=profile.idle_timeout)
            assert all(m.topic == topic for m in received)
            await expect_nothing(sub, profile.quiet, why=f"only {topic} was consumed")


async def test_batch_publish(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """15 batch publish: publish_many of 1,000 messages is delivered completely"""
    topic, group = polybus_names.topic(), polybus_names.group()
    producer, consumer = await polybus_bus_factory(), await polybus_bus_factory()
    await consumer.declare(topic, group)
    batch = [Outgoing(f"batch-{i}".encode(), key=f"k{i % 10}") for i in range(1000)]
    ids = await producer.publish_many(topic, batch)
    assert len(ids) == 1000
    assert len(set(ids)) == 1000, "ids must be unique"
    async with consumer.subscribe(topic, group=group, max_in_flight=100) as sub:
        received = await collect_ids(sub, ids, idle_timeout=polybus_target.profile.idle_timeout)
    bodies = {m.id: m.body for m in received}
    assert all(bodies[i] == out.body for i, out in zip(ids, batch, strict=True))

"""Catalogue 4: competing consumers share a group's messages."""

from __future__ import annotations

import asyncio

import pytest

from polybus import Message
from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.markers import needs
from polybus_conformance.waiting import consume_concurrently, eventually

pytestmark = pytest.mark.asyncio

CONSUMERS = 3


@needs("competing_consumers")
async def test_competing_consumers(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """4 competing consumers: each message goes to one consumer of the group"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    buses = [await polybus_bus_factory() for _ in range(CONSUMERS)]
    producer = await polybus_bus_factory()
    await producer.declare(topic, group)
    deliveries: list[tuple[int, Message]] = []
    acked: dict[str, int] = {}
    published: list[str] = []

    async def on_message(index: int, msg: Message) -> None:
        deliveries.append((index, msg))
        if msg.id in acked:
            # an acknowledged message must never come back to the group
            acked[msg.id] = -1
        else:
            acked[msg.id] = index
        # yield like a real handler doing I/O, so one consumer cannot starve the others
        await asyncio.sleep(0)
        await msg.ack()

    subs = [b.subscribe(topic, group=group, max_in_flight=4) for b in buses]
    for sub in subs:
        await sub.open()
    all_published = False

    def every_consumer_served() -> bool:
        return len({i for i, _ in deliveries}) == CONSUMERS

    consuming = asyncio.create_task(
        consume_concurrently(
            subs,
            on_message,
            lambda: all_published and set(published) <= set(acked),
            idle_timeout=profile.idle_timeout,
            progress=lambda: f"{len(set(acked) & set(published))} of {len(published)} delivered",
        )
    )
    try:
        # readiness gate: trickle messages until every consumer has received some, so
        # the split is shown once all consumers are active (group joins take time)
        while not every_consumer_served() and len(published) < profile.volume:
            published += await producer.publish_many(
                topic, [f"c-{len(published) + i}" for i in range(10)]
            )
            await eventually(every_consumer_served, within=1.0)
        rest = profile.volume - len(published)
        if rest > 0:
            published += await producer.publish_many(topic, [f"c-r{i}" for i in range(rest)])
        all_published = True
        await consuming
    finally:
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        for sub in subs:
            await sub.close()
    served = {i for i, _ in deliveries}
    assert served == set(range(CONSUMERS)), f"only consumers {served} received messages"
    assert set(acked) == set(published)
    returned = [mid for mid, owner in acked.items() if owner == -1]
    assert not returned, f"{len(returned)} acknowledged messages were delivered again"
    seen: dict[str, int] = {}
    for _, msg in deliveries:
        if msg.id in seen:
            assert msg.delivery_attempt > seen[msg.id], (
                f"message {msg.id} delivered twice without being a redelivery"
            )
        seen[msg.id] = msg.delivery_attempt

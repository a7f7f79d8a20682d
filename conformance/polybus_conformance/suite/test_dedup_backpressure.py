"""Catalogue 13 and 14: broker deduplication, backpressure."""

from __future__ import annotations

import pytest

from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.markers import needs
from polybus_conformance.waiting import collect_ids, expect_nothing, next_message

pytestmark = pytest.mark.asyncio


@needs("broker_dedup")
async def test_broker_dedup(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """13 broker dedup: the same id published twice is delivered once"""
    topic, group = polybus_names.topic(), polybus_names.group()
    first, second, consumer = (
        await polybus_bus_factory(),
        await polybus_bus_factory(),
        await polybus_bus_factory(),
    )
    await consumer.declare(topic, group)
    dup = f"dup-{polybus_names.token}"
    await first.publish(topic, b"original", id=dup)
    await second.publish(topic, b"original", id=dup)  # another client, same id
    marker = await first.publish(topic, b"marker")
    async with consumer.subscribe(topic, group=group) as sub:
        received = await collect_ids(
            sub, [dup, marker], idle_timeout=polybus_target.profile.idle_timeout
        )
        await expect_nothing(sub, polybus_target.profile.quiet, why=f"{dup} was published twice")
    assert [m.id for m in received].count(dup) == 1


async def test_backpressure(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """14 backpressure: never more than max_in_flight unsettled messages"""
    topic, group = polybus_names.topic(), polybus_names.group()
    limit = 5
    producer, consumer = await polybus_bus_factory(), await polybus_bus_factory()
    await consumer.declare(topic, group)
    ids = await producer.publish_many(topic, [f"bp-{i}" for i in range(4 * limit)])
    profile = polybus_target.profile
    async with consumer.subscribe(topic, group=group, max_in_flight=limit) as sub:
        held = [
            await next_message(sub, profile.idle_timeout, f"message {i + 1}") for i in range(limit)
        ]
        assert sub.unsettled == limit
        await expect_nothing(sub, profile.quiet, why=f"{limit} messages were unsettled")
        assert sub.unsettled == limit
        await held[0].ack()
        held.append(await next_message(sub, profile.idle_timeout, "a message after an ack"))
        assert sub.unsettled == limit
        for msg in held[1:]:
            await msg.ack()
        rest = await collect_ids(
            sub,
            [i for i in ids if i not in {m.id for m in held}],
            idle_timeout=profile.idle_timeout,
        )
        assert sub.unsettled == 0
    assert {m.id for m in held} | {m.id for m in rest} == set(ids)

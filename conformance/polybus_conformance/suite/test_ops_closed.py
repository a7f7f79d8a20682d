"""Operations tier: a closed bus refuses every operation with the same error on every
backend, memory:// included."""

from __future__ import annotations

import pytest

from polybus.errors import BusClosed
from polybus_conformance.fixtures import BusFactory, Names

pytestmark = [pytest.mark.asyncio, pytest.mark.operations]


async def test_ops_closed_bus_raises_bus_closed(
    polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """40 closed bus: publish, subscribe, declare and replay on a closed bus raise
    BusClosed, and its open subscriptions end"""
    topic, group = polybus_names.topic(), polybus_names.group()
    bus = await polybus_bus_factory()
    await bus.declare(topic, group)
    sub = await bus.subscribe(topic, group=group).open()
    await bus.close()
    with pytest.raises(StopAsyncIteration):
        await sub.__anext__()
    for operation in (
        bus.publish(topic, b"late"),
        bus.publish_many(topic, [b"late"]),
        bus.declare(topic, group),
        bus.subscribe(topic, group=group).open(),
        bus.replay_dead_letters(topic, group=group),
    ):
        with pytest.raises(BusClosed):
            await operation

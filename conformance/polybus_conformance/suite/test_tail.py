"""Catalogue 19: following a topic with a temporary group (``polybus tail``)."""

from __future__ import annotations

import pytest

from polybus.errors import ConfigError
from polybus_conformance.fixtures import BusFactory, Names, Target

pytestmark = pytest.mark.asyncio


async def test_tail_follows_new_messages_and_leaves_no_group(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """19 tail: a temporary group receives what is published while it runs, takes
    nothing from the topic's groups, and is gone afterwards"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    bus = await polybus_bus_factory()
    await bus.declare(topic, group)
    async with bus.tail(topic) as tail:
        tail_group = tail.group
        sent = await bus.publish(topic, b"watched")
        msg = await tail.get(timeout=profile.idle_timeout)
    assert msg.id == sent
    with pytest.raises(ConfigError) as gone:
        await bus.lag(topic, tail_group)
    assert gone.value.field == "group"
    async with bus.subscribe(topic, group=group) as sub:
        kept = await sub.get(timeout=profile.idle_timeout)  # the real group still has it
        await kept.ack()
    assert kept.id == sent

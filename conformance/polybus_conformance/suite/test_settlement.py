"""Catalogue 8, 9, 10, 11: nack, delayed nack, unsettled messages, resuming a group."""

from __future__ import annotations

import time

import pytest

from polybus import Message
from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.markers import needs
from polybus_conformance.waiting import collect, collect_ids, expect_nothing, next_message

pytestmark = pytest.mark.asyncio


async def test_redelivery_on_nack(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """8 redelivery on nack: every message nacked once comes back with delivery_attempt 2"""
    topic, group = polybus_names.topic(), polybus_names.group()
    producer, consumer = await polybus_bus_factory(), await polybus_bus_factory()
    await consumer.declare(topic, group)
    ids = await producer.publish_many(topic, [f"nack-{i}" for i in range(10)])
    attempts: dict[str, list[int]] = {i: [] for i in ids}
    acked: set[str] = set()
    problems: list[str] = []

    async def settle(msg: Message) -> None:
        if msg.id in acked:
            problems.append(f"{msg.id} came back after it was acked")
        attempts[msg.id].append(msg.delivery_attempt)
        if len(attempts[msg.id]) == 1:
            await msg.nack()
        else:
            acked.add(msg.id)
            await msg.ack()

    async with consumer.subscribe(topic, group=group, max_in_flight=5) as sub:
        idle = polybus_target.profile.idle_timeout
        while acked != set(ids):
            msg = await next_message(sub, idle, f"{len(acked)} of {len(ids)} redelivered")
            await settle(msg)
        await expect_nothing(sub, polybus_target.profile.quiet, why="every message was acked")
    assert not problems, problems
    wrong = {i: a for i, a in attempts.items() if a != [1, 2]}
    assert not wrong, f"expected attempts [1, 2] for each message, got {wrong}"


@needs("delayed_redelivery")
async def test_delayed_redelivery(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """9 delayed redelivery: a message nacked with delay d is not redelivered before d"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    delay = profile.nack_delay
    if polybus_target.capabilities.max_delay is not None:
        delay = min(delay, polybus_target.capabilities.max_delay)
    producer, consumer = await polybus_bus_factory(), await polybus_bus_factory()
    await consumer.declare(topic, group)
    msg_id = await producer.publish(topic, b"later", key="delayed")
    async with consumer.subscribe(topic, group=group, max_in_flight=1) as sub:
        first = await next_message(sub, profile.idle_timeout, "the first delivery")
        assert first.id == msg_id
        nacked_at = time.monotonic()
        await first.nack(delay=delay)
        again = await next_message(sub, profile.idle_timeout + delay, "the delayed redelivery")
        returned_after = time.monotonic() - nacked_at
        await again.ack()
    assert again.id == msg_id
    assert again.delivery_attempt == 2
    # the subject of this test is time: the lower bound is the guarantee
    assert returned_after >= delay, f"redelivered after {returned_after:.3f}s, before {delay}s"


async def test_unsettled_return_after_close(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """10 unsettled messages come back after their consumer closes without settling"""
    topic, group = polybus_names.topic(), polybus_names.group()
    producer = await polybus_bus_factory()
    await producer.declare(topic, group)
    ids = await producer.publish_many(topic, [f"unsettled-{i}" for i in range(5)])
    profile = polybus_target.profile
    first = await polybus_bus_factory()
    async with first.subscribe(topic, group=group, max_in_flight=5) as sub:
        held = await collect(sub, 5, idle_timeout=profile.idle_timeout, ack=False)
    assert {m.id for m in held} == set(ids)
    await first.close()
    second = await polybus_bus_factory()
    async with second.subscribe(topic, group=group) as sub:
        back = await collect_ids(sub, ids, idle_timeout=profile.redelivery_timeout)
    assert {m.id for m in back} == set(ids)


async def test_resume_after_last_ack(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """11 resume: reopening a group continues after the last ack; no acked message returns"""
    topic, group = polybus_names.topic(), polybus_names.group()
    producer = await polybus_bus_factory()
    await producer.declare(topic, group)
    ids = await producer.publish_many(topic, [f"resume-{i}" for i in range(20)])
    profile = polybus_target.profile
    first = await polybus_bus_factory()
    async with first.subscribe(topic, group=group, max_in_flight=5) as sub:
        acked = await collect(sub, 10, idle_timeout=profile.idle_timeout)
    await first.close()
    acked_ids = {m.id for m in acked}
    assert len(acked_ids) == 10, "ten distinct messages were acked"
    remaining = [i for i in ids if i not in acked_ids]
    later = await producer.publish_many(topic, [f"resume-late-{i}" for i in range(5)])
    second = await polybus_bus_factory()
    async with second.subscribe(topic, group=group) as sub:
        back = await collect_ids(sub, remaining + later, idle_timeout=profile.redelivery_timeout)
        returned = [m.id for m in back if m.id in acked_ids]
        assert not returned, f"acked messages came back: {returned}"
        await expect_nothing(sub, profile.quiet, why="every message was acked")


async def test_batch_ack(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """11b batch ack: messages settled with ack_many never return; the others do"""
    topic, group = polybus_names.topic(), polybus_names.group()
    producer = await polybus_bus_factory()
    await producer.declare(topic, group)
    ids = await producer.publish_many(topic, [f"batch-{i}" for i in range(20)])
    profile = polybus_target.profile
    first = await polybus_bus_factory()
    async with first.subscribe(topic, group=group, max_in_flight=20) as sub:
        batch: list[Message] = []
        while len(batch) < 10:
            batch.extend(await sub.get_many(10 - len(batch), timeout=profile.idle_timeout))
        await sub.ack_many(batch)
    await first.close()
    acked_ids = {m.id for m in batch}
    assert len(acked_ids) == 10, "ten distinct messages were acked"
    remaining = [i for i in ids if i not in acked_ids]
    second = await polybus_bus_factory()
    async with second.subscribe(topic, group=group) as sub:
        back = await collect_ids(sub, remaining, idle_timeout=profile.redelivery_timeout)
        returned = [m.id for m in back if m.id in acked_ids]
        assert not returned, f"acked messages came back: {returned}"
        await expect_nothing(sub, profile.quiet, why="every message was acked")

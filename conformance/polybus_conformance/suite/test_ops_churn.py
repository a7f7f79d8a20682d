"""Operations tier: consumers that come and go.

A group reopened many times in a row while messages wait, several consumers of a group
closed at once mid-stream, and a consumer process killed mid-batch while another keeps
running: in each case nothing is lost, and the messages a vanished consumer held come
back to the group's remaining or next consumer.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from polybus import Message, Outgoing
from polybus.spi import new_id
from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.markers import NETWORK, needs
from polybus_conformance.waiting import consume_concurrently, eventually, next_message, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.operations]

REOPENS = 10


async def test_ops_reopen_a_group_many_times(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """32 churn: a group reopened 10 times in a row while messages wait; each fresh
    subscription gets its first message within the idle timeout, nothing is lost"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    producer, consumer = await polybus_bus_factory(), await polybus_bus_factory()
    await producer.declare(topic, group)
    ids = await producer.publish_many(topic, [f"wait-{i}" for i in range(REOPENS)])
    acked: list[str] = []
    openings = 0
    while set(ids) - set(acked) and openings < 3 * REOPENS:
        openings += 1
        async with consumer.subscribe(topic, group=group, max_in_flight=2) as sub:
            msg = await next_message(
                sub, profile.idle_timeout, f"opening {openings}: its first message"
            )
            assert msg.id in ids, f"unexpected message {msg.id}"
            await msg.ack()
            acked.append(msg.id)
    assert set(acked) == set(ids), f"after {openings} openings, missing {set(ids) - set(acked)}"


async def test_ops_concurrent_close_then_a_fresh_consumer_gets_the_rest(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """33 churn: three consumers of one group closed at once mid-stream; a fresh consumer
    then receives every message not acked"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    producer = await polybus_bus_factory()
    await producer.declare(topic, group)
    ids = await producer.publish_many(topic, [f"mid-{i}" for i in range(60)])
    buses = [await polybus_bus_factory() for _ in range(3)]
    subs = [b.subscribe(topic, group=group, max_in_flight=4) for b in buses]
    for sub in subs:
        await sub.open()
    acked: set[str] = set()

    async def settle(index: int, msg: Message) -> None:
        if len(acked) >= 15:
            return  # held unsettled from here on: mid-stream when the close comes
        acked.add(msg.id)
        await msg.ack()

    try:
        await consume_concurrently(
            subs,
            settle,
            lambda: len(acked) >= 15,
            idle_timeout=profile.idle_timeout,
            progress=lambda: f"{len(acked)} acked",
        )
    finally:
        await asyncio.gather(*(s.close() for s in subs))  # all at once, mid-stream
    left = set(ids) - acked
    assert left, "the stream was consumed before the close: the test proves nothing"
    fresh = await polybus_bus_factory()
    async with fresh.subscribe(topic, group=group) as sub:
        while left - acked:
            msg = await next_message(
                sub, profile.redelivery_timeout, f"{len(left - acked)} unacked still missing"
            )
            assert msg.id in ids
            acked.add(msg.id)
            await msg.ack()
    assert acked == set(ids)


@needs(NETWORK)
async def test_ops_sigkill_mid_batch_the_survivor_takes_over(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """34 churn: a consumer process killed (SIGKILL) mid-batch while another consumer of
    the group keeps running; the survivor receives the dead one's unsettled messages"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    producer, survivor_bus = await polybus_bus_factory(), await polybus_bus_factory()
    await producer.declare(topic, group)
    victim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polybus_conformance._child_consumer",
        polybus_target.url,
        topic,
        group,
        "5",
        stdout=asyncio.subprocess.PIPE,
    )
    held: set[str] = set()
    published: list[str] = []
    acked: set[str] = set()

    async def read_victim() -> None:
        assert victim.stdout is not None
        while line := await victim.stdout.readline():
            held.add(line.decode().strip())

    reading = asyncio.create_task(read_victim())
    survivor = survivor_bus.subscribe(topic, group=group, max_in_flight=8)
    await survivor.open()

    async def survive() -> None:
        async for msg in survivor:
            assert msg.id in published, f"unexpected message {msg.id}"
            acked.add(msg.id)
            await msg.ack()

    surviving = asyncio.create_task(survive())
    try:
        # publish until the victim holds some: it may have joined after the survivor
        loop = asyncio.get_running_loop()
        deadline = loop.time() + profile.redelivery_timeout
        while not held and loop.time() < deadline:
            # the ids are known before they are sent: a delivery may beat the confirm
            batch = [Outgoing(f"batch-{len(published) + i}", id=new_id()) for i in range(10)]
            published += [m.id for m in batch if m.id is not None]
            await producer.publish_many(topic, batch)
            await eventually(lambda: bool(held) or surviving.done(), within=2.0)
        assert held, "the victim never received a message"
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        await reading
        await wait_for(
            lambda: set(published) <= acked or surviving.done(),
            within=profile.redelivery_timeout,
            what=f"the survivor to receive the victim's {len(held)} unsettled messages",
        )
        assert not surviving.done(), f"the survivor stopped: {surviving}"
    finally:
        if victim.returncode is None:
            victim.send_signal(signal.SIGKILL)
            await victim.wait()
        reading.cancel()
        surviving.cancel()
        await asyncio.gather(reading, surviving, return_exceptions=True)
        await survivor.close()
    assert held <= acked

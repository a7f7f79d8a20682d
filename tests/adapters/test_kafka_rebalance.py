"""Rebalancing between consumers of one group, against a real Kafka-protocol broker.

Kafka commits a position per partition, not single messages, so what a rebalance can
promise is: every message below the committed position (acked, with nothing unsettled
before it) is never delivered again; every message at or above it, the in-flight ones
included, is delivered to the partition's next owner. These tests ack a contiguous
prefix of each partition and hold the rest in flight, then let a second consumer join.
Every message has its own key: a key's next message is held back while an earlier one
is in flight (per-key order), and these tests hold many messages in flight at once.
They drive the adapter's consumers through the SPI to see which partitions each owns.
Every wait is a condition polled against a deadline.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

import polybus
from polybus import Message
from polybus_kafka._consumer import KafkaConsumer

pytestmark = pytest.mark.timeout(90)
DEADLINE = 30.0
PARTITIONS = 4


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def partition(msg: Message) -> int:
    return int(msg.raw.partition())


def offset(msg: Message) -> int:
    return int(msg.raw.offset())


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"not within {DEADLINE:g} s: {what}")
        await asyncio.sleep(0.05)  # a polling period, not a readiness guess


async def fetch_until(
    consumer: KafkaConsumer, done: Callable[[list[Message]], bool], what: str
) -> list[Message]:
    """Fetch (without settling) until ``done(received)`` holds, within the deadline."""
    received: list[Message] = []
    try:
        async with asyncio.timeout(DEADLINE):
            while not done(received):
                received.extend(await consumer.fetch(64))
    except TimeoutError:
        pytest.fail(f"not within {DEADLINE:g} s: {what} (got {len(received)})")
    return received


def open_consumer(bus: polybus.Bus, topic: str, group: str) -> KafkaConsumer:
    consumer = bus.adapter.consumer(topic, group, max_in_flight=256)
    assert isinstance(consumer, KafkaConsumer)
    return consumer


async def test_joining_consumer_gets_in_flight_messages_of_revoked_partitions(
    kafka_url: str,
) -> None:
    topic, group = name("rebalance"), name("g")
    count = 96
    async with polybus.connect(kafka_url, partitions=PARTITIONS) as bus:
        await bus.declare(topic, group)
        await bus.publish_many(
            topic, [polybus.Outgoing(body=str(i), key=f"k{i}") for i in range(count)]
        )
        first = open_consumer(bus, topic, group)
        await first.open()
        second: KafkaConsumer | None = None
        try:
            received = await fetch_until(
                first, lambda got: len(got) >= count, "the first consumer receives everything"
            )
            assert len({m.id for m in received}) == count
            assert {partition(m) for m in received} == set(range(PARTITIONS))
            by_partition: dict[int, list[Message]] = {}
            for msg in sorted(received, key=offset):
                by_partition.setdefault(partition(msg), []).append(msg)
            acked: list[Message] = []
            held: list[Message] = []
            for msgs in by_partition.values():
                half = len(msgs) // 2
                acked.extend(msgs[:half])
                held.extend(msgs[half:])
            for msg in acked:
                await first.ack(msg)
            key_of_partition = {partition(m): m.key for m in received}

            second = open_consumer(bus, topic, group)
            await second.open()
            a, b = first, second
            await until(
                lambda: (
                    bool(b.assignment)
                    and not a.assignment & b.assignment
                    and len(a.assignment | b.assignment) == PARTITIONS
                ),
                "the joining consumer is given partitions and the first one gives them up",
            )
            moved = second.assignment
            kept = first.assignment
            expected = {m.id for m in held if partition(m) in moved}
            assert expected, "the joining consumer owns partitions with in-flight messages"

            redelivered = await fetch_until(
                second,
                lambda got: {m.id for m in got} >= expected,
                "the in-flight messages of the revoked partitions reach the new owner",
            )
            ids = [m.id for m in redelivered]
            assert len(ids) == len(set(ids)), "the new owner got a message twice"
            assert set(ids) == expected, "an acked message was delivered again"
            assert all(partition(m) in moved for m in redelivered)
            for msg in redelivered:
                await second.ack(msg)
            # the first consumer settles what it still holds: the messages of the
            # partitions it kept count, its acks of revoked partitions are ignored
            for msg in held:
                await first.ack(msg)
            assert all(partition(m) in kept for m in held if m.id not in expected)
        finally:
            await first.close()
            if second is not None:
                await second.close()

        # nothing was lost and nothing is left to deliver: a new member of the group
        # receives one fresh sentinel per partition and nothing else
        sentinels = await bus.publish_many(
            topic,
            [
                polybus.Outgoing(body=f"sentinel-{p}", key=key)
                for p, key in sorted(key_of_partition.items())
            ],
        )
        last = open_consumer(bus, topic, group)
        await last.open()
        try:
            after = await fetch_until(
                last,
                lambda got: {m.id for m in got} >= set(sentinels),
                "a later member receives the sentinels",
            )
        finally:
            await last.close()
        assert sorted(m.id for m in after) == sorted(sentinels)


async def test_leaving_consumer_hands_its_in_flight_messages_to_the_other(
    kafka_url: str,
) -> None:
    topic, group = name("leave"), name("g")
    async with polybus.connect(kafka_url, partitions=PARTITIONS) as bus:
        await bus.declare(topic, group)
        first = open_consumer(bus, topic, group)
        second = open_consumer(bus, topic, group)
        await first.open()
        await second.open()
        try:
            await until(
                lambda: (
                    len(first.assignment | second.assignment) == PARTITIONS
                    and bool(first.assignment)
                    and bool(second.assignment)
                ),
                "both consumers own partitions",
            )
            count = 64
            ids = await bus.publish_many(
                topic, [polybus.Outgoing(body=str(i), key=f"k{i}") for i in range(count)]
            )
            leaving_parts = first.assignment
            staying: list[Message] = []

            async def drain(consumer: KafkaConsumer, into: list[Message]) -> None:
                while True:
                    into.extend(await consumer.fetch(64))

            from_first: list[Message] = []
            tasks = [
                asyncio.create_task(drain(first, from_first)),
                asyncio.create_task(drain(second, staying)),
            ]
            try:
                await until(
                    lambda: len({m.id for m in from_first + staying}) >= count,
                    "the two consumers receive every message between them",
                )
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            assert {partition(m) for m in from_first} <= leaving_parts
            leaving_ids = {m.id for m in from_first}
            for msg in staying:
                await second.ack(msg)
            # the first consumer leaves without settling anything
            await first.close()
            taken_over = await fetch_until(
                second,
                lambda got: {m.id for m in got} >= leaving_ids,
                "the unsettled messages of the leaving consumer reach the other one",
            )
            assert {m.id for m in taken_over} == leaving_ids
            for msg in taken_over:
                await second.ack(msg)
            assert {m.id for m in staying} | leaving_ids == set(ids)
        finally:
            await first.close()
            await second.close()

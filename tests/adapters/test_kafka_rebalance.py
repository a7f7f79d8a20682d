"""Rebalancing between consumers of one group, against a real Kafka-protocol broker.

Kafka commits a position per partition, not single messages, so what a rebalance can
promise is: every message below the committed position (acked, with nothing unsettled
before it) is never delivered again; every message at or above it, the in-flight ones
included, is delivered to the partition's next owner. A consumer giving up a partition
waits up to ``revoke_timeout`` for its unsettled messages of it to be settled first, so
that normally nothing is delivered twice and a key never runs on two consumers at once.

Most tests drive the adapter's consumers through the SPI to see which partitions each
owns; the last one runs two key-ordered subscriptions. Every wait is a condition polled
against a deadline.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable

import pytest

import polybus
from polybus import Message
from polybus.spi import GroupSpec
from polybus_kafka._consumer import KafkaConsumer

pytestmark = pytest.mark.timeout(120)
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


async def receive_until(
    consumer: KafkaConsumer, done: Callable[[list[Message]], bool], what: str
) -> list[Message]:
    """Receive (without settling) until ``done(received)`` holds, within the deadline."""
    received: list[Message] = []
    try:
        async with asyncio.timeout(DEADLINE):
            while not done(received):
                received.extend(await consumer.receive(64))
    except TimeoutError:
        pytest.fail(f"not within {DEADLINE:g} s: {what} (got {len(received)})")
    return received


def open_consumer(bus: polybus.Bus, topic: str, group: str) -> KafkaConsumer:
    consumer = bus.adapter.consumer(GroupSpec(topic, group), max_in_flight=256)
    assert isinstance(consumer, KafkaConsumer)
    return consumer


def split_between(a: KafkaConsumer, b: KafkaConsumer) -> Callable[[], bool]:
    return lambda: (
        bool(a.assignment)
        and bool(b.assignment)
        and not a.assignment & b.assignment
        and len(a.assignment | b.assignment) == PARTITIONS
    )


async def test_joining_consumer_gets_in_flight_messages_of_revoked_partitions(
    kafka_url: str,
) -> None:
    topic, group = name("rebalance"), name("g")
    count = 96
    # revoke_timeout=0: a revoked partition is let go at once, its in-flight messages
    # included (the at-least-once rule when a consumer does not settle in time)
    async with polybus.connect(kafka_url, partitions=PARTITIONS, revoke_timeout=0) as bus:
        await bus.declare(topic, group)
        await bus.publish_many(
            topic, [polybus.Outgoing(body=str(i), key=f"k{i}") for i in range(count)]
        )
        first = open_consumer(bus, topic, group)
        await first.open()
        second: KafkaConsumer | None = None
        try:
            received = await receive_until(
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
            await first.ack(acked)
            key_of_partition = {partition(m): m.key for m in received}

            second = open_consumer(bus, topic, group)
            await second.open()
            await until(
                split_between(first, second),
                "the joining consumer is given partitions and the first one gives them up",
            )
            moved = second.assignment
            kept = first.assignment
            expected = {m.id for m in held if partition(m) in moved}
            assert expected, "the joining consumer owns partitions with in-flight messages"

            redelivered = await receive_until(
                second,
                lambda got: {m.id for m in got} >= expected,
                "the in-flight messages of the revoked partitions reach the new owner",
            )
            ids = [m.id for m in redelivered]
            assert len(ids) == len(set(ids)), "the new owner got a message twice"
            assert set(ids) == expected, "an acked message was delivered again"
            assert all(partition(m) in moved for m in redelivered)
            await second.ack(redelivered)
            # the first consumer settles what it still holds: the messages of the
            # partitions it kept count, its acks of revoked partitions are ignored
            await first.ack(held)
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
            after = await receive_until(
                last,
                lambda got: {m.id for m in got} >= set(sentinels),
                "a later member receives the sentinels",
            )
        finally:
            await last.close()
        assert sorted(m.id for m in after) == sorted(sentinels)


async def test_a_revoked_partition_waits_for_its_unsettled_messages(kafka_url: str) -> None:
    topic, group = name("drain"), name("g")
    count = 64
    async with polybus.connect(kafka_url, partitions=PARTITIONS) as bus:
        await bus.declare(topic, group)
        ids = await bus.publish_many(
            topic, [polybus.Outgoing(body=str(i), key=f"k{i}") for i in range(count)]
        )
        first = open_consumer(bus, topic, group)
        second = open_consumer(bus, topic, group)
        await first.open()
        try:
            held = await receive_until(
                first, lambda got: len(got) >= count, "the first consumer receives everything"
            )
            key_of_partition = {partition(m): m.key for m in held}
            await second.open()
            await until(lambda: first.draining, "the rebalance waits for the first consumer")
            assert not second.assignment
            await first.ack(held)  # settled while the rebalance waits: handed over after
            await until(split_between(first, second), "the partitions are split")
            assert not first.draining
            sentinels = await bus.publish_many(
                topic,
                [
                    polybus.Outgoing(body=f"sentinel-{p}", key=key)
                    for p, key in sorted(key_of_partition.items())
                    if p in second.assignment
                ],
            )
            after = await receive_until(
                second,
                lambda got: {m.id for m in got} >= set(sentinels),
                "the new owner receives the sentinels of its partitions",
            )
            again = {m.id for m in after} & set(ids)
            assert not again, f"{len(again)} messages settled before the hand-over came back"
            assert sorted(m.id for m in after) == sorted(sentinels)
        finally:
            await first.close()
            await second.close()


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
            await until(split_between(first, second), "both consumers own partitions")
            count = 64
            ids = await bus.publish_many(
                topic, [polybus.Outgoing(body=str(i), key=f"k{i}") for i in range(count)]
            )
            leaving_parts = first.assignment
            staying: list[Message] = []

            async def drain(consumer: KafkaConsumer, into: list[Message]) -> None:
                while True:
                    into.extend(await consumer.receive(64))

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
            await second.ack(staying)
            # the first consumer leaves without settling anything (closing never waits)
            await first.close()
            taken_over = await receive_until(
                second,
                lambda got: {m.id for m in got} >= leaving_ids,
                "the unsettled messages of the leaving consumer reach the other one",
            )
            assert {m.id for m in taken_over} == leaving_ids
            await second.ack(taken_over)
            assert {m.id for m in staying} | leaving_ids == set(ids)
        finally:
            await first.close()
            await second.close()


async def test_key_order_holds_across_a_rebalance(kafka_url: str) -> None:
    """A second consumer joins a key-ordered group mid-stream while the first one is
    busy: no key runs on both at once, and each key's messages are processed in order,
    none of them twice."""
    topic, group = name("keyrebalance"), name("g")
    keys, per_key = 8, 40
    async with (
        polybus.connect(kafka_url, partitions=PARTITIONS) as producer,
        polybus.connect(kafka_url) as bus_a,
        polybus.connect(kafka_url) as bus_b,
    ):
        await producer.declare(topic, group, ordering="key")
        plan = [(k, seq) for seq in range(per_key) for k in range(keys)]
        ids = await producer.publish_many(
            topic, [polybus.Outgoing(f"{k}:{seq}", key=f"key-{k}") for k, seq in plan]
        )
        sequence = {i: seq for i, (_, seq) in zip(ids, plan, strict=True)}
        running: dict[str, str] = {}
        overlaps: list[str] = []
        processed: dict[str, list[int]] = defaultdict(list)
        done: set[str] = set()

        async def handle(msg: Message) -> None:
            key = msg.key or ""
            if key in running:
                overlaps.append(f"{key}: {msg.id} while {running[key]}")
            running[key] = msg.id
            processed[key].append(sequence[msg.id])
            await asyncio.sleep(0.01)  # busy: the rebalance finds messages in progress
            del running[key]
            done.add(msg.id)
            await msg.ack()

        async def consume(sub: polybus.Subscription) -> None:
            handlers: set[asyncio.Task[None]] = set()
            async for msg in sub:
                task = asyncio.create_task(handle(msg))
                handlers.add(task)
                task.add_done_callback(handlers.discard)

        sub_a = bus_a.subscribe(topic, group=group, max_in_flight=8, ordering="key")
        sub_b = bus_b.subscribe(topic, group=group, max_in_flight=8, ordering="key")
        async with sub_a:
            tasks = [asyncio.create_task(consume(sub_a))]
            try:
                await until(lambda: len(done) >= keys, "the first consumer is busy")
                await sub_b.open()  # joins mid-stream: partitions move from a to b
                tasks.append(asyncio.create_task(consume(sub_b)))
                await until(lambda: done >= set(ids), "every message is processed")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await sub_b.close()
    assert not overlaps, overlaps[:5]
    for key, seqs in processed.items():
        assert seqs == list(range(per_key)), f"{key} processed as {seqs}"

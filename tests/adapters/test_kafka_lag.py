"""``bus.lag`` on Kafka, beyond the conformance test: delivered and unsettled messages
count (the committed offset stops before them), the age is the oldest unsettled
record's over all partitions, reading joins no group and commits nothing, a group or
topic that does not exist is a ConfigError; and the tansu defect that keeps the
conformance test of the count from passing there, shown with plain confluent-kafka.

Records are published one batch per record here (``bus.publish`` each): tansu reports a
wrong end offset after a batch of several records (see the last test)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from confluent_kafka import Consumer as NativeConsumer
from confluent_kafka import Producer as NativeProducer
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]

import polybus
from polybus import Lag
from polybus.errors import ConfigError
from polybus_conformance.plugin import session_broker
from polybus_kafka import KafkaAdapter
from polybus_kafka._lag import READER_PREFIX
from polybus_kafka._records import kafka_topic

pytestmark = pytest.mark.timeout(120)
IDLE = 15.0


@pytest.fixture
async def bus(kafka_url: str) -> AsyncIterator[polybus.Bus]:
    async with polybus.connect(kafka_url) as b:
        yield b


@pytest.fixture
def flavour(request: pytest.FixtureRequest, kafka_url: str) -> str:
    return session_broker(request.config, "kafka").flavour


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def native_conf(url: str, role: Literal["producer", "consumer", "admin"]) -> dict[str, Any]:
    return KafkaAdapter.from_url(url, {}).settings.common(role)


async def publish_each(bus: polybus.Bus, topic: str, bodies: list[str]) -> list[str]:
    """One publish (one single-record batch) per body."""
    return [await bus.publish(topic, body) for body in bodies]


async def lag_becomes(bus: polybus.Bus, topic: str, group: str, expected: int) -> Lag:
    """The lag once the consumer's commits reached the broker (they are asynchronous
    while it runs)."""
    lag = await bus.lag(topic, group)
    deadline = time.monotonic() + IDLE
    while lag.messages != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        lag = await bus.lag(topic, group)
    assert lag.messages == expected, lag
    return lag


def create_topic(admin: AdminClient, topic: str, partitions: int) -> None:
    """Create ``topic`` and wait until its partitions have a leader."""
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(IDLE)
    deadline = time.monotonic() + IDLE
    while time.monotonic() < deadline:
        info = admin.list_topics(topic, timeout=IDLE).topics.get(topic)
        parts = info.partitions if info is not None and info.error is None else {}
        if parts and all(p.leader >= 0 for p in parts.values()):
            return
        time.sleep(0.05)
    pytest.fail(f"topic {topic!r} has no leader")


TANSU_NO_MEMBERS = "tansu: DescribeGroups lists no members of a stable group"


def joined(url: str, topic: str, group: str) -> NativeConsumer:
    """A plain member of ``group`` on ``topic`` that joined and committed nothing."""
    conf = {**native_conf(url, "consumer"), "group.id": group, "enable.auto.commit": False}
    member = NativeConsumer(conf)
    member.subscribe([topic])
    deadline = time.monotonic() + IDLE * 2
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(0.1)
    assert member.assignment(), "the plain member got no partition"
    return member


def test_capabilities() -> None:
    caps = KafkaAdapter.from_url("kafka://127.0.0.1:9092", {}).capabilities
    assert caps.lag_messages
    assert caps.lag_seconds


async def test_a_group_or_topic_that_does_not_exist_is_a_config_error(bus: polybus.Bus) -> None:
    topic = name("lag-missing")
    await bus.declare(topic, name("g"))
    with pytest.raises(ConfigError, match="kafka: no group") as caught:
        await bus.lag(topic, name("never-declared"))
    assert caught.value.field == "group"
    with pytest.raises(ConfigError, match="kafka: no group") as caught:
        await bus.lag(name("no-such-topic"), "g")
    assert caught.value.field == "group"


async def test_settled_messages_leave_the_backlog_and_reading_changes_nothing(
    kafka_url: str, bus: polybus.Bus
) -> None:
    """The conformance test of the count, with single-record batches."""
    topic, group = name("lag-count"), name("g")
    await bus.declare(topic, group)
    assert await bus.lag(topic, group) == Lag(0, None)
    ids = await publish_each(bus, topic, [f"m{i}" for i in range(10)])
    async with bus.subscribe(topic, group=group, max_in_flight=1) as sub:
        done = []
        for _ in range(4):
            msg = await sub.get(timeout=IDLE)
            done.append(msg)
            await msg.ack()
    lag = await lag_becomes(bus, topic, group, 6)
    assert lag.oldest_age is not None
    for _ in range(3):
        assert (await bus.lag(topic, group)).messages == 6
    # the lag reader is no member of any group and committed nothing anywhere
    admin = AdminClient(native_conf(kafka_url, "admin"))
    listed = admin.list_consumer_groups().result(IDLE)
    assert not [g.group_id for g in listed.valid if g.group_id.startswith(READER_PREFIX)]
    async with bus.subscribe(topic, group=group) as sub:
        rest = []
        for _ in range(6):
            msg = await sub.get(timeout=IDLE)
            rest.append(msg)
            await msg.ack()
    assert {m.id for m in [*done, *rest]} == set(ids)
    assert [m.delivery_attempt for m in rest] == [1] * 6
    assert await lag_becomes(bus, topic, group, 0) == Lag(0, None)


async def test_delivered_unsettled_messages_count_and_the_oldest_sets_the_age(
    kafka_url: str, bus: polybus.Bus
) -> None:
    """Two messages held unsettled, in two partitions: each keeps its partition's
    committed offset before it, so it and every later record of its partition count
    (acked ones too: Kafka commits positions); the age is the older one's, whatever
    the partition. Reading the lag while the group's member runs leaves it be."""
    topic, group = name("lag-held"), name("g")
    await bus.declare(topic, group)
    await bus.publish(topic, "oldest")
    await asyncio.sleep(2.0)
    newer_published = time.time()
    await publish_each(bus, topic, [f"m{i}" for i in range(8)])
    async with bus.subscribe(topic, group=group, max_in_flight=10) as sub:
        got = [await sub.get(timeout=IDLE) for _ in range(9)]
        oldest = next(m for m in got if m.body == b"oldest")
        newer = next(m for m in got if m.raw.partition() != oldest.raw.partition())
        for msg in got:
            if msg not in (oldest, newer):
                await msg.ack()

        def behind(held: polybus.Message) -> int:
            part, offset = held.raw.partition(), held.raw.offset()
            return sum(1 for m in got if m.raw.partition() == part and m.raw.offset() >= offset)

        lag = await lag_becomes(bus, topic, group, behind(oldest) + behind(newer))
        assert lag.oldest_age is not None
        assert lag.oldest_age >= time.time() - newer_published + 1.5, lag
        await oldest.ack()
        lag = await lag_becomes(bus, topic, group, behind(newer))
        assert lag.oldest_age is not None
        assert lag.oldest_age <= time.time() - newer_published + 0.5, lag
        await newer.ack()
        # the acks above moved the commits: the member kept its partitions throughout
        assert await lag_becomes(bus, topic, group, 0) == Lag(0, None)
        # and its counts: a message published now comes once
        await bus.publish(topic, "after")
        assert (await sub.get(timeout=IDLE)).delivery_attempt == 1


async def test_a_member_with_no_commit_counts_from_the_low_watermark(
    kafka_url: str, flavour: str, request: pytest.FixtureRequest
) -> None:
    """A group the broker refused start offsets to (it had members already) reads a
    partition with no committed offset from its low watermark: so does the lag. The
    group is known by its members' assignments (DescribeGroups), which tansu does not
    list (test_tansu_describe_lists_the_members_of_a_stable_group)."""
    if flavour == "tansu":
        request.applymarker(pytest.mark.xfail(strict=True, reason=TANSU_NO_MEMBERS))
    topic, group = name("lag-uncommitted"), name("plain")
    native = kafka_topic(topic)
    admin = AdminClient(native_conf(kafka_url, "admin"))
    create_topic(admin, native, 1)
    producer = NativeProducer(native_conf(kafka_url, "producer"))
    for i in range(3):
        producer.produce(native, f"r{i}".encode())
        assert producer.flush(IDLE) == 0  # single-record batches
    member = joined(kafka_url, native, group)
    try:
        async with polybus.connect(kafka_url) as bus:
            lag = await bus.lag(topic, group)
        assert lag.messages == 3
        assert lag.oldest_age is not None
    finally:
        member.close()


def test_tansu_end_offset_after_a_batch_of_several_records(
    kafka_url: str, flavour: str, request: pytest.FixtureRequest
) -> None:
    """The broker fact behind the count: the end offset (high watermark, ListOffsets
    latest) after a batch of five records is 5. Apache Kafka keeps it; tansu 0.6
    reports the batch's base offset + 1 until the next batch arrives, so a group's
    backlog reads too small after ``publish_many`` there (plain confluent-kafka)."""
    if flavour == "tansu":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="tansu: the end offset after a batch is its base offset + 1",
            )
        )
    topic = name("hw-batch")
    admin = AdminClient(native_conf(kafka_url, "admin"))
    create_topic(admin, topic, 1)
    producer = NativeProducer({**native_conf(kafka_url, "producer"), "linger.ms": 50})
    for i in range(5):
        producer.produce(topic, f"r{i}".encode(), partition=0)
    assert producer.flush(IDLE) == 0  # one batch of five
    spec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    latest = admin.list_offsets({TopicPartition(topic, 0): spec})
    end = next(iter(latest.values())).result(IDLE).offset
    reader = NativeConsumer({**native_conf(kafka_url, "consumer"), "group.id": name("hw")})
    try:
        _, high = reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=IDLE)
    finally:
        reader.close()
    assert (end, high) == (5, 5)


def test_tansu_describe_lists_the_members_of_a_stable_group(
    kafka_url: str, flavour: str, request: pytest.FixtureRequest
) -> None:
    """The broker fact behind knowing a group that has members but no committed offset:
    DescribeGroups lists a stable group's members with their assignments. Apache Kafka
    does; tansu 0.6 answers "Stable" with no member (plain confluent-kafka)."""
    if flavour == "tansu":
        request.applymarker(pytest.mark.xfail(strict=True, reason=TANSU_NO_MEMBERS))
    topic, group = name("describe"), name("plain")
    admin = AdminClient(native_conf(kafka_url, "admin"))
    create_topic(admin, topic, 1)
    member = joined(kafka_url, topic, group)
    try:
        info = admin.describe_consumer_groups([group])[group].result(IDLE)
        assigned = [
            (tp.topic, tp.partition)
            for m in info.members or []
            if m.assignment is not None
            for tp in m.assignment.topic_partitions or []
        ]
        assert assigned == [(topic, 0)], info.state
    finally:
        member.close()

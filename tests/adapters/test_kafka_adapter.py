"""Kafka adapter behaviour against a real Kafka-protocol broker (tansu or Kafka)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from confluent_kafka import Consumer as NativeConsumer
from confluent_kafka import Producer as NativeProducer
from confluent_kafka.admin import AdminClient

import polybus
from polybus.errors import BrokerUnavailable, ConfigError, MessageTooLarge
from polybus_kafka import KafkaAdapter
from polybus_kafka._consumer import pause_grace, poll_bound
from polybus_kafka._records import kafka_topic
from polybus_kafka._settings import DEFAULT_PARTITIONS

pytestmark = pytest.mark.timeout(90)
IDLE = 15.0
QUIET = 1.5
"""How long a test watches for a message that must not come."""


@pytest.fixture(scope="module")
def url(kafka_url: str) -> str:
    return kafka_url


@pytest.fixture
async def bus(url: str) -> AsyncIterator[polybus.Bus]:
    async with polybus.connect(url) as b:
        yield b


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def native_conf(url: str, role: Literal["producer", "consumer", "admin"]) -> dict[str, Any]:
    """The settings a plain confluent-kafka client of ``role`` uses for ``url``."""
    return KafkaAdapter.from_url(url, {}).settings.common(role)


def native_produce(url: str, topic: str, records: list[dict[str, Any]]) -> None:
    """Produce ``records`` (``produce`` keyword arguments) with a plain client."""
    producer = NativeProducer(native_conf(url, "producer"))
    for rec in records:
        producer.produce(topic, **rec)
    assert producer.flush(IDLE) == 0


def native_consume(url: str, topic: str, count: int) -> list[Any]:
    """Read ``count`` records of ``topic`` from the start with a plain consumer."""
    conf = {
        **native_conf(url, "consumer"),
        "group.id": name("native"),
        "auto.offset.reset": "earliest",
    }
    consumer = NativeConsumer(conf)
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + IDLE * 2
    try:
        while len(out) < count and time.monotonic() < deadline:
            out.extend(r for r in consumer.consume(count - len(out), 0.5) if r.error() is None)
    finally:
        consumer.close()
    assert len(out) == count, f"a plain consumer read {len(out)} of {count} records"
    return out


async def drain(sub: polybus.Subscription, count: int) -> list[polybus.Message]:
    """Receive and ack ``count`` messages."""
    out = []
    for _ in range(count):
        msg = await sub.get(timeout=IDLE)
        out.append(msg)
        await msg.ack()
    return out


# -- configuration (no broker needed) ----------------------------------------------


def test_unknown_option_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        KafkaAdapter.from_url("kafka://127.0.0.1:9092?partitons=3", {})
    assert info.value.field == "partitons"


def test_bad_value_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        KafkaAdapter.from_url("kafka://127.0.0.1:9092", {"partitions": "many"})
    assert info.value.field == "partitions"


def test_settings_polybus_owns_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        KafkaAdapter.from_url("kafka://h:1", {"options": {"enable.auto.commit": True}})
    assert info.value.field == "options.enable.auto.commit"


def test_native_settings_pass_through_and_secrets_stay_hidden() -> None:
    adapter = KafkaAdapter.from_url(
        "kafka://a:1,b:2?linger.ms=20", {"options": {"sasl.password": "hunter2"}}
    )
    assert adapter.settings.bootstrap_servers == "a:1,b:2"
    assert adapter.settings.options == {"linger.ms": "20", "sasl.password": "hunter2"}
    shown = f"{adapter!r} {adapter.settings!r} {adapter.settings.redacted_options()}"
    assert "hunter2" not in shown


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as info:
        KafkaAdapter.from_url("kafka://user:s3cret@h:1", {})
    assert "s3cret" not in str(info.value)


def test_publish_timeout_comes_from_the_setting() -> None:
    assert KafkaAdapter.from_url("kafka://h:1", {}).publish_timeout == 30.0
    assert KafkaAdapter.from_url("kafka://h:1?publish_timeout=7", {}).publish_timeout == 7.0


def test_capabilities() -> None:
    caps = KafkaAdapter.from_url("kafka://h:1?max_message_size=5000", {}).capabilities
    for promised in ("competing_consumers", "key_order", "key_order_competing", "fan_out"):
        assert getattr(caps, promised), promised
    for promised in ("persistent", "replay", "delayed_redelivery", "stable_foreign_ids"):
        assert getattr(caps, promised), promised
    assert not caps.native_delivery_count
    assert not caps.native_dead_letter
    assert not caps.broker_dedup
    assert caps.max_message_size == 5000
    assert DEFAULT_PARTITIONS > 1, "new topics need several partitions to scale out"


def test_poll_free_waits_are_bounded_by_max_poll_interval() -> None:
    default = KafkaAdapter.from_url("kafka://h:1", {}).settings
    assert pause_grace(default) == default.pause_after
    assert poll_bound(default, default.revoke_timeout) == default.revoke_timeout
    short = KafkaAdapter.from_url(
        "kafka://h:1?max.poll.interval.ms=4000&pause_after=30&revoke_timeout=30", {}
    ).settings
    assert pause_grace(short) == 2.0
    assert poll_bound(short, short.revoke_timeout) == 2.0
    for bad in ("pause_after=0", "revoke_timeout=301"):
        with pytest.raises(ConfigError) as info:
            KafkaAdapter.from_url(f"kafka://h:1?{bad}", {})
        assert info.value.field == bad.split("=")[0]


# -- against the broker --------------------------------------------------------------


async def test_unreachable_broker_fails_within_connect_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BrokerUnavailable):
        async with asyncio.timeout(20):
            await polybus.connect(f"kafka://127.0.0.1:{port}", connect_timeout=1.0).open()


async def test_partition_count_conflict_is_a_config_error(url: str) -> None:
    topic = name("conflict")
    async with polybus.connect(url, partitions=2) as first:
        await first.declare(topic)
        await first.declare(topic)  # idempotent
    async with polybus.connect(url, partitions=4) as second:
        with pytest.raises(ConfigError) as info:
            await second.declare(topic)
    assert info.value.field == "partitions"
    async with polybus.connect(url) as unspecified:
        await unspecified.declare(topic)  # no explicit count: the existing topic is used


async def test_new_topics_get_the_default_partitions(url: str, bus: polybus.Bus) -> None:
    topic = name("default")
    await bus.declare(topic)
    admin = AdminClient(native_conf(url, "admin"))
    meta = await asyncio.to_thread(admin.list_topics, topic, 10)
    assert len(meta.topics[topic].partitions) == DEFAULT_PARTITIONS


async def test_native_size_refusal_becomes_message_too_large(url: str) -> None:
    async with polybus.connect(
        url, max_message_size=50_000, options={"message.max.bytes": 10_000}
    ) as bus:
        with pytest.raises(MessageTooLarge) as info:
            await bus.publish(name("big"), b"x" * 20_000)
    assert info.value.retryable is False
    assert info.value.__cause__ is not None


async def test_keyless_messages_spread_over_every_partition(url: str) -> None:
    topic, group = name("spread"), name("g")
    async with polybus.connect(url, partitions=4) as bus:
        await bus.declare(topic, group)
        # librdkafka's sticky partitioner would put each of these into one partition
        singles = [await bus.publish(topic, f"s{i}") for i in range(4)]
        batch = await bus.publish_many(topic, [f"b{i}" for i in range(400)])
        async with bus.subscribe(topic, group=group, max_in_flight=256) as sub:
            got = await drain(sub, len(batch) + len(singles))
    where = {m.id: m.raw.partition() for m in got}
    assert set(where) == set(batch) | set(singles)
    assert {where[i] for i in batch} == {0, 1, 2, 3}, "one batch must reach every partition"
    assert {where[i] for i in singles} == {0, 1, 2, 3}, "single publishes take turns too"


async def test_same_key_same_partition_in_order(bus: polybus.Bus) -> None:
    topic, group = name("keys"), name("g")
    await bus.declare(topic, group)
    batch = [polybus.Outgoing(body=f"{k}-{i}", key=f"k{k}") for i in range(10) for k in range(4)]
    await bus.publish_many(topic, batch)
    seen: dict[str, list[str]] = {}
    partitions: dict[str, set[int]] = {}
    async with bus.subscribe(topic, group=group, max_in_flight=8) as sub:
        for msg in await drain(sub, len(batch)):
            assert msg.key is not None
            seen.setdefault(msg.key, []).append(msg.text())
            partitions.setdefault(msg.key, set()).add(msg.raw.partition())
    assert all(len(p) == 1 for p in partitions.values()), partitions
    for k in range(4):
        assert seen[f"k{k}"] == [f"{k}-{i}" for i in range(10)]


async def test_group_starts_at_creation_not_at_first_poll(bus: polybus.Bus) -> None:
    topic, group = name("start"), name("g")
    await bus.publish(topic, "before the group")  # single-record batches (see README)
    await bus.declare(topic, group)
    await bus.publish(topic, "after the group")
    async with bus.subscribe(topic, group=group) as sub:
        msg = await sub.get(timeout=IDLE)
        assert msg.text() == "after the group"
        await msg.ack()
        with pytest.raises(TimeoutError):
            await sub.get(timeout=2.0)


# -- ordering ------------------------------------------------------------------------


async def test_an_unordered_group_processes_one_keys_messages_at_once(bus: polybus.Bus) -> None:
    topic, group = name("none"), name("g")
    await bus.declare(topic, group)  # ordering="none", the default
    ids = await bus.publish_many(topic, [polybus.Outgoing(str(i), key="hot") for i in range(5)])
    async with bus.subscribe(topic, group=group, max_in_flight=5) as sub:
        held = [await sub.get(timeout=IDLE) for _ in ids]  # none settled yet
        assert [m.id for m in held] == ids
        await sub.ack_many(held)


async def test_a_key_ordered_group_hands_out_one_message_per_key(bus: polybus.Bus) -> None:
    topic, group = name("key"), name("g")
    await bus.declare(topic, group, ordering="key")
    batch = [polybus.Outgoing(f"{k}{i}", key=k) for i in range(3) for k in ("a", "b")]
    await bus.publish_many(topic, batch)
    async with bus.subscribe(topic, group=group, max_in_flight=6, ordering="key") as sub:
        first = [await sub.get(timeout=IDLE) for _ in range(2)]
        assert sorted(m.text() for m in first) == ["a0", "b0"]
        with pytest.raises(TimeoutError):  # each key's next one waits for the first
            await sub.get(timeout=QUIET)
        await first[0].ack()
        nxt = await sub.get(timeout=IDLE)
        assert nxt.text() == f"{first[0].key}1"
        await nxt.ack()
        await first[1].ack()
        rest = await drain(sub, 3)
    order: dict[str, list[str]] = {}
    for msg in [*first, nxt, *rest]:
        order.setdefault(msg.key or "", []).append(msg.text())
    assert order == {"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"]}


async def test_key_ordered_nack_comes_back_before_the_keys_later_messages(
    bus: polybus.Bus,
) -> None:
    topic, group = name("nackkey"), name("g")
    await bus.declare(topic, group, ordering="key")
    await bus.publish_many(topic, [polybus.Outgoing(body=str(i), key="one") for i in range(6)])
    order: list[tuple[str, int]] = []
    async with bus.subscribe(topic, group=group, max_in_flight=6, ordering="key") as sub:
        while len(order) < 7:
            msg = await sub.get(timeout=IDLE)
            order.append((msg.text(), msg.delivery_attempt))
            if msg.text() == "2" and msg.delivery_attempt == 1:
                await msg.nack(delay=0.3)
            else:
                await msg.ack()
    assert order == [("0", 1), ("1", 1), ("2", 1), ("2", 2), ("3", 1), ("4", 1), ("5", 1)]


async def test_unordered_nack_rewinds_the_partition_after_the_delay(url: str) -> None:
    topic, group = name("nack"), name("g")
    delay = 0.5
    async with polybus.connect(url, partitions=1) as bus:
        await bus.declare(topic, group)
        await bus.publish_many(topic, [str(i) for i in range(6)])
        order: list[tuple[str, int]] = []
        seen_at: list[float] = []
        async with bus.subscribe(topic, group=group, max_in_flight=1) as sub:
            while len(order) < 7:
                msg = await sub.get(timeout=IDLE)
                seen_at.append(time.monotonic())
                order.append((msg.text(), msg.delivery_attempt))
                if msg.text() == "2" and msg.delivery_attempt == 1:
                    await msg.nack(delay=delay)
                else:
                    await msg.ack()
    # the adapter seeks back: "2" returns before "3", which was never handed out
    assert order == [("0", 1), ("1", 1), ("2", 1), ("2", 2), ("3", 1), ("4", 1), ("5", 1)]
    assert seen_at[3] - seen_at[2] >= delay


async def test_one_bus_refuses_a_group_with_two_orderings(bus: polybus.Bus) -> None:
    topic, group = name("conflict"), name("g")
    await bus.declare(topic, group, ordering="key")
    with pytest.raises(ConfigError) as info:
        async with bus.subscribe(topic, group=group):  # ordering="none"
            pass
    assert info.value.field == "ordering"


async def test_kafka_stores_no_ordering_for_a_group(url: str) -> None:
    # documented in README.md: consumers of one group must agree on its ordering
    topic, group = name("agree"), name("g")
    async with polybus.connect(url) as first:
        await first.declare(topic, group, ordering="key")
    async with polybus.connect(url) as second:
        await second.declare(topic, group, ordering="none")
        msg_id = await second.publish(topic, "x", key="k")
        async with second.subscribe(topic, group=group) as sub:
            assert [m.id for m in await drain(sub, 1)] == [msg_id]


# -- names and foreign messages --------------------------------------------------------


async def test_a_topic_name_kafka_refuses_is_fitted_everywhere(url: str, bus: polybus.Bus) -> None:
    topic, group = f"orders/eu team {uuid.uuid4().hex[:6]}", name("g")
    fitted = kafka_topic(topic)
    assert fitted != topic
    await bus.declare(topic, group)
    msg_id = await bus.publish(topic, "fitted", key="k")
    async with bus.subscribe(topic, group=group) as sub:
        (msg,) = await drain(sub, 1)
    assert (msg.id, msg.topic, msg.raw.topic()) == (msg_id, topic, fitted)
    admin = AdminClient(native_conf(url, "admin"))
    meta = await asyncio.to_thread(admin.list_topics, None, 10)
    assert fitted in meta.topics
    assert bus.dead_letter_topic(topic, group) == f"{topic}.{group}.dlq"
    assert kafka_topic(bus.dead_letter_topic(topic, group)) in meta.topics


async def test_foreign_records_get_distinct_ids_stable_across_redelivery(
    url: str, bus: polybus.Bus
) -> None:
    topic, group = f"foreign in/{uuid.uuid4().hex[:6]}", name("g")  # a fitted name, too
    await bus.declare(topic, group)
    body = bytes(range(256))
    same = {"value": body, "key": b"native-key", "headers": [("trace", b"t-1"), ("n", None)]}
    await asyncio.to_thread(native_produce, url, kafka_topic(topic), [same, same])
    async with bus.subscribe(topic, group=group, max_in_flight=1) as sub:
        first = await sub.get(timeout=IDLE)
        await first.nack()
        again = await sub.get(timeout=IDLE)
        await again.ack()
        (second,) = await drain(sub, 1)
    assert again.id == first.id
    assert again.delivery_attempt == 2
    assert second.id != first.id, "two foreign records must never share an id"
    for msg in (first, second):
        partition, offset = msg.raw.partition(), msg.raw.offset()
        assert msg.id == f"{topic}/{partition}/{offset}"  # the polybus topic name
        assert (msg.topic, msg.body, msg.key) == (topic, body, "native-key")
        assert msg.headers == {"trace": "t-1", "n": ""}
        assert msg.content_type is None
        assert msg.published_at is not None


async def test_a_plain_consumer_reads_what_polybus_publishes(url: str, bus: polybus.Bus) -> None:
    topic = name("plain")
    await bus.publish(topic, {"n": 1, "text": "grüße"}, key="k", headers={"tenant": "acme"})
    await bus.publish(topic, b"\x00raw\xff")
    records = await asyncio.to_thread(native_consume, url, topic, 2)
    by_key = {r.key(): r for r in records}
    doc = by_key[b"k"]
    assert json.loads(doc.value()) == {"n": 1, "text": "grüße"}  # plain JSON text
    assert ("tenant", b"acme") in doc.headers()
    assert by_key[None].value() == b"\x00raw\xff"  # bytes as they are, no envelope


async def test_unsettled_messages_come_back_after_close(bus: polybus.Bus) -> None:
    topic, group = name("close"), name("g")
    await bus.declare(topic, group)
    ids = await bus.publish_many(topic, [str(i) for i in range(5)])
    async with bus.subscribe(topic, group=group) as sub:
        first = await sub.get(timeout=IDLE)
        await first.ack()
        held = [await sub.get(timeout=IDLE) for _ in range(len(ids) - 1)]
    async with bus.subscribe(topic, group=group) as sub:
        again = {(await sub.get(timeout=IDLE)).id for _ in held}
    assert again == {m.id for m in held}
    assert first.id not in again

"""Kafka adapter behaviour against a real Kafka-protocol broker (tansu or Kafka)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import pytest

import polybus
from polybus.errors import BrokerUnavailable, ConfigError, MessageTooLarge
from polybus_kafka import KafkaAdapter

pytestmark = pytest.mark.timeout(60)
IDLE = 15.0


@pytest.fixture(scope="module")
def url(kafka_url: str) -> str:
    return kafka_url


@pytest.fixture
async def bus(url: str) -> AsyncIterator[polybus.Bus]:
    async with polybus.connect(url) as b:
        yield b


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


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
    shown = f"{adapter!r} {adapter.settings!r} {adapter.redacted_url()}"
    assert "hunter2" not in shown


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as info:
        KafkaAdapter.from_url("kafka://user:s3cret@h:1", {})
    assert "s3cret" not in str(info.value)


def test_dead_letter_topic_names_are_valid_kafka_names() -> None:
    adapter = KafkaAdapter.from_url("kafka://h:1", {})
    assert adapter.dead_letter_topic("orders", "billing") == "orders.billing.dlq"
    odd = adapter.dead_letter_topic("orders", "team a/b")
    assert odd.endswith(".dlq")
    assert not set(odd) & {" ", "/"}
    assert odd != adapter.dead_letter_topic("orders", "team a_b")


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


async def test_native_size_refusal_becomes_message_too_large(url: str) -> None:
    async with polybus.connect(
        url, max_message_size=50_000, options={"message.max.bytes": 10_000}
    ) as bus:
        with pytest.raises(MessageTooLarge) as info:
            await bus.publish(name("big"), b"x" * 20_000)
    assert info.value.retryable is False
    assert info.value.__cause__ is not None


async def test_same_key_same_partition_in_order(bus: polybus.Bus) -> None:
    topic, group = name("keys"), name("g")
    await bus.declare(topic, group)
    batch = [polybus.Outgoing(body=f"{k}-{i}", key=f"k{k}") for i in range(10) for k in range(4)]
    await bus.publish_many(topic, batch)
    seen: dict[str, list[str]] = {}
    partitions: dict[str, set[int]] = {}
    async with bus.subscribe(topic, group=group, max_in_flight=8) as sub:
        for _ in range(len(batch)):
            msg = await sub.get(timeout=IDLE)
            assert msg.key is not None
            seen.setdefault(msg.key, []).append(msg.text())
            partitions.setdefault(msg.key, set()).add(msg.raw.partition())
            await msg.ack()
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


async def test_nack_redelivers_before_later_messages_of_the_partition(bus: polybus.Bus) -> None:
    topic, group = name("nack"), name("g")
    await bus.declare(topic, group)
    await bus.publish_many(topic, [polybus.Outgoing(body=str(i), key="one") for i in range(6)])
    order: list[tuple[str, int]] = []
    async with bus.subscribe(topic, group=group, max_in_flight=6) as sub:
        while len([o for o in order if o[0] != "2" or o[1] == 2]) < 6:
            msg = await sub.get(timeout=IDLE)
            order.append((msg.text(), msg.delivery_attempt))
            if msg.text() == "2" and msg.delivery_attempt == 1:
                await msg.nack(delay=0.3)
            else:
                await msg.ack()
    assert order == [("0", 1), ("1", 1), ("2", 1), ("2", 2), ("3", 1), ("4", 1), ("5", 1)]


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


def test_pause_grace_is_bounded_by_max_poll_interval() -> None:
    from polybus_kafka._consumer import pause_grace

    default = KafkaAdapter.from_url("kafka://h:1", {}).settings
    assert pause_grace(default) == default.pause_after
    short = KafkaAdapter.from_url("kafka://h:1?max.poll.interval.ms=4000&pause_after=30", {})
    assert pause_grace(short.settings) == 2.0
    with pytest.raises(ConfigError) as info:
        KafkaAdapter.from_url("kafka://h:1?pause_after=0", {})
    assert info.value.field == "pause_after"

"""SQS/SNS adapter behaviour against a real server (moto here; LocalStack or AWS via
POLYBUS_SQS_URL): topology and conflicts, the wire format through SNS, size limits,
native redrive, leases, cancellation, FIFO ids and error hygiene."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqs_support as support

import polybus
from polybus import Bus, Message, Outgoing
from polybus import headers as h
from polybus.errors import BrokerUnavailable, ConfigError, MessageTooLarge
from polybus.spi import GroupSettings
from polybus_conformance.provisioning.base import free_port
from polybus_sqs import SQSAdapter

pytestmark = pytest.mark.timeout(90)

IDLE = 15.0


@pytest.fixture(scope="session")
def url(sqs_url: str) -> str:
    return sqs_url


@pytest.fixture
async def bus(url: str) -> AsyncIterator[Bus]:
    async with polybus.connect(url) as opened:
        yield opened


def adapter_of(bus: Bus) -> SQSAdapter:
    adapter = bus.adapter
    assert isinstance(adapter, SQSAdapter)
    return adapter


async def test_headers_bodies_and_envelope_survive_sns(bus: Bus) -> None:
    topic, group = support.name("wire"), support.name("g")
    headers = {f"h{i:02}": f"v{i}" for i in range(14)} | {"odd name": "x", "empty": ""}
    async with bus.subscribe(topic, group=group) as sub:
        sent = [
            Outgoing(bytes(range(256)), key="k1", headers=headers),
            Outgoing(b"", key="k2"),
            Outgoing({"json": True}),
            Outgoing("ünïcode text", headers={"traceparent": "00-abc-01"}),
        ]
        ids = await bus.publish_many(topic, sent)
        got: dict[str, Message] = {}
        while len(got) < len(ids):
            msg = await sub.get(timeout=IDLE)
            got[msg.id] = msg
            await msg.ack()
    binary, empty, js, text = (got[i] for i in ids)
    assert binary.body == bytes(range(256))
    assert binary.headers == headers
    assert binary.key == "k1"
    assert empty.body == b""
    assert empty.key == "k2"
    assert js.json() == {"json": True}
    assert js.content_type == "application/json"
    assert text.text() == "ünïcode text"
    assert text.headers == {"traceparent": "00-abc-01"}
    assert all(m.published_at is not None and m.delivery_attempt == 1 for m in got.values())
    assert len(binary.raw["MessageAttributes"]) == 10  # the SQS limit, the rest packed


async def test_batches_split_by_bytes_and_all_arrive(bus: Bus) -> None:
    topic, group = support.name("bytes"), support.name("g")
    async with bus.subscribe(topic, group=group, max_in_flight=10) as sub:
        ids = await bus.publish_many(topic, [b"y" * 120_000 for _ in range(6)])
        seen: set[str] = set()
        while seen != set(ids):
            msg = await sub.get(timeout=IDLE)
            assert msg.body == b"y" * 120_000
            seen.add(msg.id)
            await msg.ack()


async def test_wire_overflow_is_message_too_large_and_nothing_sent(bus: Bus) -> None:
    topic, group = support.name("large"), support.name("g")
    limit = bus.capabilities.max_message_size
    # within the declared size as polybus counts it (characters), but headers of
    # 3-byte characters make it larger on the wire (bytes) than SQS accepts
    body = b"z" * (limit // 2)
    fat_headers = {f"x{i}": "€" * 1000 for i in range(60)}
    assert bus.envelope(body, headers=fat_headers).size < limit
    async with bus.subscribe(topic, group=group) as sub:
        with pytest.raises(MessageTooLarge) as caught:
            await bus.publish_many(topic, [Outgoing(b"first"), Outgoing(body, headers=fat_headers)])
        assert caught.value.size > caught.value.limit
        marker = await bus.publish(topic, b"marker")
        msg = await sub.get(timeout=IDLE)
        assert msg.id == marker, "the batch with a too-large message published something"
        await msg.ack()


async def test_queue_conflict_names_visibility_timeout(url: str) -> None:
    topic, group = support.name("conflict"), support.name("g")
    async with polybus.connect(support.with_options(url, visibility_timeout=7)) as first:
        await first.declare(topic, group)
    async with polybus.connect(support.with_options(url, visibility_timeout=9)) as second:
        with pytest.raises(ConfigError) as caught:
            await second.declare(topic, group)
    assert caught.value.field == "visibility_timeout"


async def test_declare_is_idempotent(bus: Bus, url: str) -> None:
    topic, group = support.name("idem"), support.name("g")
    await bus.declare(topic, group)
    async with polybus.connect(url) as other:
        await other.declare(topic, group)
        await other.declare(topic, group)
    async with bus.subscribe(topic, group=group) as sub:
        msg_id = await bus.publish(topic, b"once")
        msg = await sub.get(timeout=IDLE)
        await msg.ack()
        assert msg.id == msg_id
        with pytest.raises(TimeoutError):
            # the same queue subscribed twice would deliver a second copy
            await sub.get(timeout=3)


async def test_without_sns_one_group_per_topic(url: str) -> None:
    topic = support.name("direct")
    async with polybus.connect(support.with_options(url, sns="false")) as bus:
        assert not bus.capabilities.fan_out
        async with bus.subscribe(topic, group="only") as sub:
            msg_id = await bus.publish(topic, b"direct", headers={"a": "1"})
            msg = await sub.get(timeout=IDLE)
            assert (msg.id, msg.body, msg.headers) == (msg_id, b"direct", {"a": "1"})
            await msg.ack()
        with pytest.raises(ConfigError) as caught:
            await bus.declare(topic, "another")
    assert caught.value.field == "group"


async def test_native_redrive_and_explicit_dead_letters_share_one_reader(bus: Bus) -> None:
    topic, group = support.name("redrive"), support.name("g")
    async with bus.subscribe(topic, group=group, max_deliveries=2) as sub:
        poison = await bus.publish(topic, b"poison", key="p")
        for attempt in (1, 2):
            msg = await sub.get(timeout=IDLE)
            assert (msg.id, msg.delivery_attempt) == (poison, attempt)
            await msg.nack()
        rejected = await bus.publish(topic, b"rejected")
        msg = await sub.get(timeout=IDLE)  # the poison message is gone: SQS moved it
        assert msg.id == rejected
        await msg.dead_letter("validation failed")
    found: dict[str, Message] = {}
    async with bus.dead_letters(topic, group=group) as dead:
        while len(found) < 2:
            msg = await dead.get(timeout=IDLE)
            found[msg.id] = msg
            await msg.ack()
    native, explicit = found[poison], found[rejected]
    assert native.body == b"poison"
    assert native.key == "p"
    assert native.headers[h.DLQ_ORIGINAL_TOPIC] == topic
    assert native.headers[h.DLQ_ORIGINAL_GROUP] == group
    assert "delivery limit of 2" in native.headers[h.DLQ_REASON]
    assert native.delivery_attempt == 1
    assert explicit.headers[h.DLQ_REASON] == "validation failed"


async def test_long_handler_keeps_its_message(url: str) -> None:
    topic, group = support.name("lease"), support.name("g")
    short = support.with_options(url, visibility_timeout=2)
    async with (
        polybus.connect(short) as bus,
        polybus.connect(short) as rival,
        bus.subscribe(topic, group=group) as holder,
        rival.subscribe(topic, group=group) as other,
    ):
        msg_id = await bus.publish(topic, b"slow work")
        held = await holder.get(timeout=IDLE)
        assert held.id == msg_id
        # three visibility timeouts pass while the message is held: without lease
        # extension SQS would hand it to the rival consumer
        with pytest.raises(TimeoutError):
            await other.get(timeout=6)
        await held.ack()


async def test_nack_with_delay_comes_back_with_the_next_attempt(bus: Bus) -> None:
    topic, group = support.name("nackd"), support.name("g")
    async with bus.subscribe(topic, group=group) as sub:
        msg_id = await bus.publish(topic, b"later")
        first = await sub.get(timeout=IDLE)
        await first.nack(delay=1.5)
        again = await sub.get(timeout=IDLE)
        assert (again.id, again.delivery_attempt) == (msg_id, 2)
        await again.ack()


async def test_cancelled_fetch_loses_nothing(bus: Bus) -> None:
    topic, group = support.name("cancel"), support.name("g")
    await bus.declare(topic, group)
    adapter = adapter_of(bus)
    consumer = adapter.consumer(topic, group, max_in_flight=5)
    await consumer.open()
    try:
        msg_id = await bus.publish(topic, b"in flight")
        pending = asyncio.create_task(consumer.fetch(5))
        await asyncio.sleep(0)  # the fetch has started its receive; no I/O can finish yet
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        got: list[str] = []
        while msg_id not in got:
            got += [m.id for m in await asyncio.wait_for(consumer.fetch(5), IDLE)]
        assert got == [msg_id]
    finally:
        await consumer.close()
    async with bus.subscribe(topic, group=group) as sub:
        back = await sub.get(timeout=IDLE)  # close released it unsettled
        assert back.id == msg_id
        await back.ack()


async def test_fifo_key_is_message_group_and_id_deduplicates(url: str) -> None:
    topic, group = support.name("fifo"), support.name("g")
    async with (
        polybus.connect(support.with_options(url, fifo="true")) as bus,
        bus.subscribe(topic, group=group, max_in_flight=10) as sub,
    ):
        await bus.publish(topic, b"one", key="order-1", id="fixed-id")
        await bus.publish(topic, b"one again", key="order-1", id="fixed-id")
        ids = await bus.publish_many(
            topic, [Outgoing(f"{i}".encode(), key="order-1") for i in range(5)]
        )
        order: list[str] = []
        while len(order) < 6:
            msg = await sub.get(timeout=IDLE)
            assert msg.raw["Attributes"]["MessageGroupId"] == "order-1"
            order.append(msg.id)
            await msg.ack()
        with pytest.raises(TimeoutError):
            await sub.get(timeout=3)
    assert order == ["fixed-id", *ids]


async def test_unreachable_endpoint_and_no_secret_in_errors(url: str) -> None:
    secret = "Sup3rSecretAccessKeyValue"
    dead = f"sqs://?region=us-east-1&endpoint_url=http://127.0.0.1:{free_port()}"
    bus = polybus.connect(
        dead,
        connect_timeout=1,
        options={"aws_access_key_id": "AKIATEST", "aws_secret_access_key": secret},
    )
    with pytest.raises(BrokerUnavailable) as caught:
        await bus.open()
    assert secret not in str(caught.value)
    assert secret not in repr(bus)
    assert "AKIATEST" not in repr(bus)


async def test_group_settings_update_the_redrive_limit(bus: Bus) -> None:
    topic, group = support.name("limit"), support.name("g")
    adapter = adapter_of(bus)
    await adapter.ensure_topic(topic)
    await adapter.ensure_group(topic, group, GroupSettings(max_deliveries=5))
    await adapter.ensure_group(topic, group, GroupSettings(max_deliveries=3))
    queue = await adapter.topology.group_queue(topic, group)
    attrs = await adapter.clients.sqs(
        "get_queue_attributes", "t", QueueUrl=queue.url, AttributeNames=["RedrivePolicy"]
    )
    assert '"maxReceiveCount": 3' in attrs["Attributes"]["RedrivePolicy"]

"""SQS/SNS adapter behaviour against a real server (moto here; LocalStack or AWS via
POLYBUS_SQS_URL): topology and conflicts, the wire format through SNS, size limits,
dead-lettering without a redrive policy, leases, close, FIFO ids and error hygiene.
Ordering lives in test_sqs_ordering.py, network faults in test_sqs_faults.py, foreign
messages in test_sqs_foreign.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import sqs_support as support

import polybus
from polybus import Bus, Message, Outgoing
from polybus import headers as h
from polybus.errors import BrokerUnavailable, ConfigError, MessageTooLarge
from polybus.spi import GroupSpec
from polybus_conformance.provisioning.base import free_port
from polybus_sqs import SQSAdapter, SQSConsumer

pytestmark = pytest.mark.timeout(120)

IDLE = 15.0


@pytest.fixture(scope="session")
def url(sqs_url: str) -> str:
    """Standard mode (a session run with fifo=true does not change these tests)."""
    return support.with_options(sqs_url, fifo="false")


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
    # what a native consumer sees: text as is, JSON as JSON text, bytes as base64 text
    assert js.raw["Body"] == '{"json":true}'
    assert text.raw["Body"] == "ünïcode text"
    assert binary.raw["Body"] != bytes(range(256)).decode("latin-1")
    envelope = json.loads(binary.raw["MessageAttributes"]["polybus-envelope"]["StringValue"])
    assert envelope["enc"] == "b64"


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


async def test_delivery_limit_dead_letters_through_polybus_not_a_redrive_policy(
    bus: Bus, url: str
) -> None:
    topic, group = support.name("limit"), support.name("g")
    native = support.Native(url)
    async with bus.subscribe(topic, group=group, max_deliveries=2) as sub:
        poison = await bus.publish(topic, b"poison", key="p", headers={"x": "1"})
        for attempt in (1, 2):
            msg = await sub.get(timeout=IDLE)
            assert (msg.id, msg.delivery_attempt) == (poison, attempt)
            await msg.nack()
        rejected = await bus.publish(topic, b"rejected")
        msg = await sub.get(timeout=IDLE)  # the poison message went to the dead letters
        assert msg.id == rejected
        await msg.dead_letter("validation failed")
    queue = adapter_of(bus).topology.queue_name(topic, group)
    assert "RedrivePolicy" not in await native.attributes(queue)
    found: dict[str, Message] = {}
    async with bus.dead_letters(topic, group=group) as dead:
        while len(found) < 2:
            msg = await dead.get(timeout=IDLE)
            found[msg.id] = msg
            await msg.ack()
    limited, explicit = found[poison], found[rejected]
    assert (limited.body, limited.key) == (b"poison", "p")
    assert limited.headers[h.DLQ_ORIGINAL_TOPIC] == topic
    assert limited.headers[h.DLQ_ORIGINAL_GROUP] == group
    assert limited.headers[h.DLQ_ATTEMPTS] == "2"
    assert "delivery limit of 2" in limited.headers[h.DLQ_REASON]
    assert limited.headers["x"] == "1"
    assert limited.delivery_attempt == 1
    assert explicit.headers[h.DLQ_REASON] == "validation failed"


async def test_an_existing_redrive_policy_is_left_as_it_is(bus: Bus, url: str) -> None:
    topic, group = support.name("redrive"), support.name("g")
    native = support.Native(url)
    await bus.declare(topic, group)
    queue = adapter_of(bus).topology.queue_name(topic, group)
    dlq = await native.call(native.sqs, "create_queue", QueueName=support.name("old-dlq"))
    dlq_arn = (
        await native.call(
            native.sqs,
            "get_queue_attributes",
            QueueUrl=dlq["QueueUrl"],
            AttributeNames=["QueueArn"],
        )
    )["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 7})
    await native.call(
        native.sqs,
        "set_queue_attributes",
        QueueUrl=await native.queue_url(queue),
        Attributes={"RedrivePolicy": policy},
    )
    async with polybus.connect(url) as again:
        await again.declare(topic, group)  # an older deployment's queue, declared anew
        async with again.subscribe(topic, group=group, max_deliveries=3):
            pass
    assert json.loads((await native.attributes(queue))["RedrivePolicy"])["maxReceiveCount"] == 7


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
    assert held.delivery_attempt == 1


async def test_nack_with_delay_comes_back_with_the_next_attempt(bus: Bus) -> None:
    topic, group = support.name("nackd"), support.name("g")
    async with bus.subscribe(topic, group=group) as sub:
        msg_id = await bus.publish(topic, b"later")
        first = await sub.get(timeout=IDLE)
        nacked = time.monotonic()
        await first.nack(delay=1.5)
        again = await sub.get(timeout=IDLE)
        assert time.monotonic() - nacked >= 1.5
        assert (again.id, again.delivery_attempt) == (msg_id, 2)
        await again.ack()


async def test_close_releases_what_a_cancelled_receive_took(url: str) -> None:
    """The core cancels a receive only to close its consumer: close waits for the long
    poll in flight and makes what it took visible at once (not after the 60 s
    visibility timeout)."""
    slow = support.with_options(url, visibility_timeout=60, wait_time_seconds=3)
    topic, group = support.name("cancel"), support.name("g")
    async with polybus.connect(slow) as bus:
        await bus.declare(topic, group)
        consumer = bus.adapter.consumer(GroupSpec(topic, group), max_in_flight=5)
        assert isinstance(consumer, SQSConsumer)
        assert consumer.lease == 60
        await consumer.open()
        pending = asyncio.create_task(consumer.receive(5))
        await asyncio.sleep(0.2)  # the long poll is in flight
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        msg_id = await bus.publish(topic, b"in flight")  # the orphaned poll takes it
        started = time.monotonic()
        await consumer.close()
        assert time.monotonic() - started < 3 + 2 + 1, "close waited past wait_time_seconds"
        async with bus.subscribe(topic, group=group) as sub:
            back = await sub.get(timeout=IDLE)  # close released it unsettled
            assert (back.id, back.delivery_attempt) == (msg_id, 2)
            await back.ack()


async def test_close_gives_back_every_unsettled_message_at_once(url: str) -> None:
    slow = support.with_options(url, visibility_timeout=60)
    topic, group = support.name("release"), support.name("g")
    async with polybus.connect(slow) as bus:
        await bus.declare(topic, group)
        ids = await bus.publish_many(topic, [f"held-{i}" for i in range(12)])
        async with bus.subscribe(topic, group=group, max_in_flight=12) as sub:
            held = [await sub.get(timeout=IDLE) for _ in range(12)]
            await held[0].ack()
        async with bus.subscribe(topic, group=group, max_in_flight=12) as sub:
            back = {(await sub.get(timeout=IDLE)).id for _ in range(11)}
    assert back == set(ids) - {held[0].id}


async def test_fifo_key_is_message_group_and_id_deduplicates(url: str) -> None:
    topic, group = support.name("fifo"), support.name("g")
    async with (
        polybus.connect(support.with_options(url, fifo="true")) as bus,
        bus.subscribe(topic, group=group, max_in_flight=10, ordering="key") as sub,
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


async def test_a_deleted_queue_is_declared_again_under_a_running_subscription(
    bus: Bus, url: str
) -> None:
    """The receive of a vanished queue is a transient failure: the core reopens the
    consumer, which declares the group (queue, policy, subscription) again."""
    topic, group = support.name("gone"), support.name("g")
    native = support.Native(url)
    async with bus.subscribe(topic, group=group) as sub:
        first = await bus.publish(topic, b"before")
        await (await sub.get(timeout=IDLE)).ack()
        queue = adapter_of(bus).topology.queue_name(topic, group)
        await native.call(native.sqs, "delete_queue", QueueUrl=await native.queue_url(queue))
        with pytest.raises(TimeoutError):
            await sub.get(timeout=3)  # the receive fails; the core declares again
        ids: list[str] = []
        got: Message | None = None
        deadline = time.monotonic() + 60
        while got is None and time.monotonic() < deadline:
            ids.append(await bus.publish(topic, b"after"))
            try:
                got = await sub.get(timeout=2)
            except TimeoutError:
                continue
        assert got is not None, "the group was not declared again"
        assert got.id in ids
        assert got.id != first
        assert sub.health.reconnects >= 1
        await got.ack()


# -- lag ---------------------------------------------------------------------------------


async def _lag_is(bus: Bus, topic: str, group: str, expected: int) -> polybus.Lag:
    """The lag once it reads ``expected`` (SQS's counts are approximate and follow the
    calls with a delay on AWS), or the last one read after IDLE."""
    deadline = time.monotonic() + IDLE
    lag = await bus.lag(topic, group)
    while lag.messages != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        lag = await bus.lag(topic, group)
    return lag


@pytest.mark.parametrize("fifo", ["false", "true"])
async def test_lag_counts_every_message_not_deleted(url: str, fifo: str) -> None:
    """Waiting, received and not settled, and nacked with a delay: all the group's
    backlog; reading it receives nothing (the receive counts stay)."""
    topic, group = support.name("lag"), support.name("g")
    async with polybus.connect(support.with_options(url, fifo=fifo)) as bus:
        await bus.declare(topic, group)
        assert await bus.lag(topic, group) == polybus.Lag(0, None)
        ids = await bus.publish_many(topic, [f"m{i}" for i in range(5)])
        assert await _lag_is(bus, topic, group, 5) == polybus.Lag(5, None)
        for _ in range(3):
            assert (await bus.lag(topic, group)).messages == 5
        async with bus.subscribe(topic, group=group, max_in_flight=2) as sub:
            first = await sub.get(timeout=IDLE)
            second = await sub.get(timeout=IDLE)
            # two received, not deleted: still counted (as not visible)
            assert (await _lag_is(bus, topic, group, 5)).messages == 5
            await first.ack()
            await second.nack(delay=30)  # invisible for 30 s: still the group's
            assert (await _lag_is(bus, topic, group, 4)).messages == 4
        async with bus.subscribe(topic, group=group, max_in_flight=5) as sub:
            rest = [await sub.get(timeout=IDLE) for _ in range(3)]
            await sub.ack_many(rest)
        assert (await _lag_is(bus, topic, group, 1)).messages == 1  # the delayed one
    assert {first.id, second.id, *(m.id for m in rest)} == set(ids)
    assert [m.delivery_attempt for m in (first, second, *rest)] == [1] * 5


async def test_lag_of_a_group_that_does_not_exist(bus: Bus, url: str) -> None:
    topic, group = support.name("nolag"), support.name("g")
    await bus.declare(topic, group)
    with pytest.raises(ConfigError) as caught:
        await bus.lag(topic, "nope")
    assert caught.value.field == "group"
    assert "no group 'nope'" in str(caught.value)
    assert await bus.lag(topic, group) == polybus.Lag(0, None)
    async with polybus.connect(support.with_options(url, sns="false")) as direct:
        await direct.declare(topic, "only")
        assert await direct.lag(topic, "only") == polybus.Lag(0, None)
        with pytest.raises(ConfigError) as caught:
            await direct.lag(topic, "another")  # the topic's queue is the other group's
        assert caught.value.field == "group"
        with pytest.raises(ConfigError) as caught:
            await direct.lag(support.name("never"), "only")
        assert caught.value.field == "group"

"""Foreign messages both ways, against a real server: messages sent by plain boto3 (no
polybus envelope) as polybus reads them (ids, headers, keys, attempts), and polybus's
messages as a plain boto3 consumer of the group's queue reads them."""

from __future__ import annotations

import base64
import json

import pytest
import sqs_support as support

import polybus
from polybus import Message
from polybus_sqs import SQSAdapter

pytestmark = pytest.mark.timeout(120)

IDLE = 15.0


@pytest.fixture(scope="session")
def standard(sqs_url: str) -> str:
    return support.with_options(sqs_url, fifo="false")


@pytest.fixture(scope="session")
def fifo(sqs_url: str) -> str:
    return support.with_options(sqs_url, fifo="true")


def queue_of(bus: polybus.Bus, topic: str, group: str) -> str:
    assert isinstance(bus.adapter, SQSAdapter)
    return bus.adapter.topology.queue_name(topic, group)


async def test_foreign_messages_have_distinct_ids_kept_across_redelivery(standard: str) -> None:
    topic, group = support.name("foreign"), support.name("g")
    native = support.Native(standard)
    body = "the same body twice, €"
    attributes = {
        "tenant": {"DataType": "String", "StringValue": "acme"},
        "amount": {"DataType": "Number", "StringValue": "12.5"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }
    async with polybus.connect(standard) as bus:
        await bus.declare(topic, group)
        url = await native.queue_url(queue_of(bus, topic, group))
        sent = [
            await native.call(
                native.sqs,
                "send_message",
                QueueUrl=url,
                MessageBody=body,
                MessageAttributes=attributes,
            )
            for _ in range(2)
        ]
        async with bus.subscribe(topic, group=group) as sub:
            first, second = await sub.get(timeout=IDLE), await sub.get(timeout=IDLE)
            assert {first.id, second.id} == {s["MessageId"] for s in sent}
            for msg in (first, second):
                assert msg.body == body.encode()
                assert msg.headers == {"tenant": "acme", "amount": "12.5"}
                assert "blob" in msg.raw["MessageAttributes"]  # Binary: raw only
                assert (msg.key, msg.content_type, msg.delivery_attempt) == (None, None, 1)
                assert msg.published_at is not None
            await second.ack()
            await first.nack()
            again = await sub.get(timeout=IDLE)
            await again.ack()
    assert (again.id, again.delivery_attempt, again.body) == (first.id, 2, body.encode())


async def test_a_malformed_envelope_attribute_is_read_as_foreign(standard: str) -> None:
    topic, group = support.name("forged"), support.name("g")
    native = support.Native(standard)
    async with polybus.connect(standard) as bus:
        await bus.declare(topic, group)
        url = await native.queue_url(queue_of(bus, topic, group))
        sent = await native.call(
            native.sqs,
            "send_message",
            QueueUrl=url,
            MessageBody="x",
            MessageAttributes={
                "polybus-envelope": {"DataType": "String", "StringValue": "not json"}
            },
        )
        async with bus.subscribe(topic, group=group) as sub:
            msg = await sub.get(timeout=IDLE)
            await msg.ack()
    assert (msg.id, msg.body, msg.headers) == (sent["MessageId"], b"x", {})


async def test_fifo_foreign_messages_are_keyed_by_their_message_group(fifo: str) -> None:
    topic, group = support.name("ffifo"), support.name("g")
    native = support.Native(fifo)
    async with polybus.connect(fifo) as bus:
        await bus.declare(topic, group, ordering="key")
        url = await native.queue_url(queue_of(bus, topic, group))
        for i in range(3):
            await native.call(
                native.sqs,
                "send_message",
                QueueUrl=url,
                MessageBody=f"legacy-{i}",
                MessageGroupId="account-9",
                MessageDeduplicationId=f"d{i}",
            )
        got: list[Message] = []
        async with bus.subscribe(topic, group=group, ordering="key") as sub:
            for _ in range(3):
                msg = await sub.get(timeout=IDLE)
                got.append(msg)
                await msg.ack()
    assert [m.body for m in got] == [b"legacy-0", b"legacy-1", b"legacy-2"]
    assert {m.key for m in got} == {"account-9"}
    assert len({m.id for m in got}) == 3


async def test_a_native_consumer_of_the_group_queue_reads_polybus_messages(
    standard: str,
) -> None:
    topic, group = support.name("out"), support.name("g")
    native = support.Native(standard)
    async with polybus.connect(standard) as bus:
        await bus.declare(topic, group)
        await bus.publish(topic, "café text", headers={"tenant": "acme"})
        await bus.publish(topic, {"order": 7}, headers={"tenant": "acme"})
        await bus.publish(topic, b"\xff\x00binary", headers={"tenant": "acme"})
        raw = await native.receive_all(queue_of(bus, topic, group), 3)
    bodies = {m["Body"] for m in raw}
    encoded = base64.b64encode(b"\xff\x00binary").decode()
    assert bodies == {"café text", '{"order":7}', encoded}
    for m in raw:
        assert m["MessageAttributes"]["tenant"]["StringValue"] == "acme"
        envelope = json.loads(m["MessageAttributes"]["polybus-envelope"]["StringValue"])
        assert envelope.get("enc") == ("b64" if m["Body"] == encoded else None)

"""Interoperability with plain nats-py clients on a real nats-server: foreign messages
(no polybus headers) are read faithfully with ids of their own, and polybus's messages
are readable by a native consumer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import nats
import nats_support as support
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

import polybus
from polybus import Bus
from polybus_nats import NatsAdapter
from polybus_nats._topology import TopicRef, topic_ref

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with polybus.connect(nats_url) as opened:
        yield opened


@pytest.fixture
async def raw(nats_url: str) -> AsyncIterator[NATS]:
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


def _topic(bus: Bus, topic: str) -> TopicRef:
    assert isinstance(bus.adapter, NatsAdapter)
    return topic_ref(bus.adapter.settings, topic)


async def test_foreign_messages_get_distinct_stable_ids(bus: Bus, raw: NATS) -> None:
    topic, group = support.name("foreign"), support.name("g")
    await bus.declare(topic, group)
    ref = _topic(bus, topic)
    js = raw.jetstream()
    body = bytes(range(256))
    acks = [
        await js.publish(ref.subject, body, headers={"trace": "abc", "Nats-Msg-Id": "n-1"}),
        await js.publish(ref.subject, body),  # the same body again, no headers at all
    ]
    async with bus.subscribe(topic, group=group) as sub:
        first, second = await sub.get(timeout=10), await sub.get(timeout=10)
        await second.ack()
        await first.nack()
        again = await sub.get(timeout=10)
        await again.ack()
    assert [first.id, second.id] == [f"{ref.stream}:{a.seq}" for a in acks]
    assert first.id != second.id
    # a redelivery keeps the message's identity (its stream sequence)
    assert (again.id, again.delivery_attempt) == (first.id, 2)
    assert first.body == second.body == body
    assert first.headers == {"trace": "abc", "Nats-Msg-Id": "n-1"}
    assert second.headers == {}
    assert (first.key, first.content_type, first.delivery_attempt) == (None, None, 1)
    assert first.published_at is not None


async def test_polybus_messages_are_readable_by_a_native_consumer(bus: Bus, raw: NATS) -> None:
    topic = support.name("native")
    await bus.declare(topic)
    ref = _topic(bus, topic)
    js = raw.jetstream()
    durable = support.name("raw")
    await js.add_consumer(
        ref.stream, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT)
    )
    psub = await js.pull_subscribe_bind(durable, ref.stream)
    binary = await bus.publish(topic, b"\x00raw\xff", key="k1", headers={"trace": "abc"})
    await bus.publish(topic, {"n": 1, "text": "ü"})
    got = await psub.fetch(2, timeout=10)
    for msg in got:
        await msg.ack()
    raw_bytes, raw_json = got
    assert raw_bytes.data == b"\x00raw\xff"  # no envelope around the body
    assert raw_bytes.headers is not None
    assert raw_bytes.headers["trace"] == "abc"
    assert raw_bytes.headers["polybus-id"] == binary
    assert raw_bytes.headers["polybus-key"] == "k1"
    assert raw_bytes.headers["Nats-Msg-Id"] == binary
    assert json.loads(raw_json.data) == {"n": 1, "text": "ü"}  # plain JSON text
    assert raw_json.headers is not None
    assert raw_json.headers["polybus-content-type"] == "application/json"

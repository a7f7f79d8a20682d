"""Catalogue 1: a message comes out exactly as it went in."""

from __future__ import annotations

import pytest

from polybus import Outgoing
from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.waiting import collect_ids

pytestmark = pytest.mark.asyncio

UNICODE = "grüße, 世界 ✓ 🚀 — ñ"


async def test_round_trip_fields(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """1 round trip: binary, empty and unicode bodies, key, headers and id preserved exactly"""
    topic, group = polybus_names.topic(), polybus_names.group()
    producer, consumer = await polybus_bus_factory(), await polybus_bus_factory()
    await consumer.declare(topic, group)
    sent = [
        Outgoing(bytes(range(256)) * 4, key="key-binary", headers={"x-kind": "binary"}),
        Outgoing(b"", key="key-empty", headers={"x-kind": "empty", "x-empty-value": ""}),
        Outgoing(UNICODE, key="clé-ü", headers={"x-kind": "unicode", "x-text": UNICODE}),
        Outgoing({"n": 1, "nested": [1, "two"]}, headers={"x-kind": "json"}),
        Outgoing(b"no key, no headers"),
    ]
    envelopes = {}
    for out in sent:
        env = producer.envelope(out.body, key=out.key, headers=out.headers)
        envelopes[env.id] = env
        got_id = await producer.publish(
            topic, out.body, key=out.key, headers=out.headers, id=env.id
        )
        assert got_id == env.id
    async with consumer.subscribe(topic, group=group) as sub:
        received = await collect_ids(
            sub, envelopes, idle_timeout=polybus_target.profile.idle_timeout
        )
    assert len(received) == len(sent), "each message must arrive once"
    for msg in received:
        env = envelopes[msg.id]
        assert msg.body == env.body, f"body of {msg.id} changed"
        assert type(msg.body) is bytes
        assert msg.key == env.key
        assert msg.headers == dict(env.headers), f"headers of {msg.id} changed"
        assert msg.content_type == env.content_type
        assert msg.topic == topic
        assert msg.group == group
        assert msg.delivery_attempt == 1
        assert msg.published_at is not None
    unicode_msg = next(m for m in received if m.key == "clé-ü")
    assert unicode_msg.text() == UNICODE


async def test_round_trip_max_size(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """1 round trip: a message of exactly the declared max size arrives byte-exact"""
    topic, group = polybus_names.topic(), polybus_names.group()
    producer, consumer = await polybus_bus_factory(), await polybus_bus_factory()
    await consumer.declare(topic, group)
    limit = polybus_target.capabilities.max_message_size
    headers = {"x-size": "max"}
    msg_id = f"max-{polybus_names.token}"
    overhead = producer.envelope(b"", key="big", headers=headers, id=msg_id).size
    body = bytes((i * 7) % 256 for i in range(limit - overhead))
    await producer.publish(topic, body, key="big", headers=headers, id=msg_id)
    assert producer.envelope(body, key="big", headers=headers, id=msg_id).size == limit
    async with consumer.subscribe(topic, group=group, max_in_flight=1) as sub:
        (msg,) = await collect_ids(sub, [msg_id], idle_timeout=polybus_target.profile.idle_timeout)
    assert len(msg.body) == len(body)
    assert msg.body == body
    assert msg.headers == headers

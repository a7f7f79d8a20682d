"""Interoperability with plain redis-py clients on a real redis-server: entries added by
another client (no polybus fields) are read faithfully with the entry id as their id,
and polybus's entries are plain for a native reader."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import redis_support as support
from redis_support import bus_fixture, raw_fixture  # noqa: F401 (fixtures)

from polybus import Bus

pytestmark = pytest.mark.timeout(60)


async def test_foreign_entries_get_their_entry_id_stable_across_redeliveries(
    bus: Bus, raw: Any
) -> None:
    topic, group = support.name("foreign"), support.name("g")
    await bus.declare(topic, group)
    key = f"polybus:{topic}"
    body = bytes(range(256))
    first_id = await raw.xadd(key, {"body": body, "trace": "abc"})
    second_id = await raw.xadd(key, {"body": body, "trace": "abc"})  # the same again
    async with bus.subscribe(topic, group=group) as sub:
        first, second = await sub.get(timeout=10), await sub.get(timeout=10)
        await second.ack()
        await first.nack()
        again = await sub.get(timeout=10)
        await again.ack()
    assert [first.id, second.id] == [first_id.decode(), second_id.decode()]
    assert first.id != second.id
    assert (again.id, again.delivery_attempt) == (first.id, 2)
    for msg in (first, second, again):
        assert msg.body == body
        assert msg.headers == {"trace": "abc"}
        assert msg.key is None
        assert msg.content_type is None
    # published_at is the time part of the entry id (milliseconds)
    millis = int(first_id.decode().split("-")[0])
    assert first.published_at == datetime.fromtimestamp(millis / 1000, UTC)


async def test_how_foreign_fields_map_to_body_and_headers(bus: Bus, raw: Any) -> None:
    topic, group = support.name("fields"), support.name("g")
    await bus.declare(topic, group)
    key = f"polybus:{topic}"
    await raw.xadd(key, {"data": b"from data", "source": "legacy"})
    await raw.xadd(key, {"body": b"body wins", "data": "a header then"})
    await raw.xadd(key, {"temperature": "21", "city": "Oslo"})
    await raw.xadd(key, {"body": b"x", "raw": b"\xff\xfe"})
    async with bus.subscribe(topic, group=group) as sub:
        got = [await sub.get(timeout=10) for _ in range(4)]
        await sub.ack_many(got)
    assert (got[0].body, got[0].headers) == (b"from data", {"source": "legacy"})
    assert (got[1].body, got[1].headers) == (b"body wins", {"data": "a header then"})
    assert (got[2].body, got[2].headers) == (b"", {"temperature": "21", "city": "Oslo"})
    assert got[3].headers == {"raw": "\ufffd\ufffd"}  # not UTF-8: replacement characters


async def test_a_native_reader_sees_plain_entries(bus: Bus, raw: Any) -> None:
    topic = support.name("out")
    await bus.declare(topic)
    key = f"polybus:{topic}"
    ids = [
        await bus.publish(topic, "café".encode(), headers={"tenant": "acme"}),
        await bus.publish(topic, {"order": 7}, headers={"tenant": "acme"}),
    ]
    entries = await raw.xrange(key)
    assert [f[b"body"] for _, f in entries] == ["café".encode(), b'{"order":7}']
    assert [f[b"tenant"] for _, f in entries] == [b"acme", b"acme"]
    assert [f[b"polybus-id"].decode() for _, f in entries] == ids

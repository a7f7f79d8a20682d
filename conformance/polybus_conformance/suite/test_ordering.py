"""Catalogue 7: in a key-ordered group (``ordering="key"``), messages with the same key
keep their publish order, and a key's next message is never handed out while an
earlier one is unsettled."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from polybus import Bus, ConfigError, Message, Outgoing
from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.markers import needs
from polybus_conformance.waiting import consume_concurrently

pytestmark = pytest.mark.asyncio

KEYS = 16


async def _publish_interleaved(bus: Bus, topic: str, per_key: int) -> dict[str, int]:
    """Publish ``per_key`` messages for each of 16 keys, round-robin; id -> sequence."""
    plan = [(k, seq) for seq in range(per_key) for k in range(KEYS)]
    batch = [Outgoing(f"{k}:{seq}".encode(), key=f"key-{k}") for k, seq in plan]
    ids = await bus.publish_many(topic, batch)
    return {mid: seq for mid, (_, seq) in zip(ids, plan, strict=True)}


async def _check_order(
    target: Target, buses: list[Bus], topic: str, group: str, max_in_flight: int
) -> None:
    producer = buses[0]
    await producer.declare(topic, group, ordering="key")
    per_key = max(2, target.profile.volume // KEYS)
    subs = [
        b.subscribe(topic, group=group, max_in_flight=max_in_flight, ordering="key") for b in buses
    ]
    for sub in subs:
        await sub.open()
    first_seen: dict[str, list[int]] = defaultdict(list)
    unsettled: dict[str, str] = {}
    overlaps: list[str] = []
    acked: set[str] = set()
    sequence: dict[str, int] = {}

    async def on_message(index: int, msg: Message) -> None:
        key = msg.key or ""
        if key in unsettled:
            overlaps.append(f"{key}: {msg.id} handed out while {unsettled[key]} was unsettled")
        unsettled[key] = msg.id
        if msg.delivery_attempt == 1:
            first_seen[key].append(sequence[msg.id])
        # give the other consumers a chance to receive the key's next message now
        await asyncio.sleep(0)
        del unsettled[key]
        acked.add(msg.id)
        await msg.ack()

    try:
        sequence.update(await _publish_interleaved(producer, topic, per_key))
        await consume_concurrently(
            subs,
            on_message,
            lambda: acked >= set(sequence),
            idle_timeout=target.profile.idle_timeout,
            progress=lambda: f"{len(acked)} of {len(sequence)} delivered",
        )
    finally:
        for sub in subs:
            await sub.close()
    assert not overlaps, overlaps[:5]
    for k in range(KEYS):
        order = first_seen[f"key-{k}"]
        assert order == sorted(order), f"key-{k} delivered out of order: {order}"


@needs("key_order", "key_order_competing")
async def test_per_key_order(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """7 per-key order: 16 keys interleaved, 3 consumers of a key-ordered group, order kept
    per key"""
    buses = [await polybus_bus_factory() for _ in range(3)]
    await _check_order(
        polybus_target, buses, polybus_names.topic(), polybus_names.group(), max_in_flight=8
    )


@needs("key_order")
async def test_per_key_order_single_consumer(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """7 per-key order: 16 keys interleaved, one consumer of a key-ordered group, order kept
    per key"""
    buses = [await polybus_bus_factory()]
    await _check_order(
        polybus_target, buses, polybus_names.topic(), polybus_names.group(), max_in_flight=8
    )


async def test_key_order_refused_where_not_claimed(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """7 per-key order refused: a backend that does not claim key order refuses
    ordering="key" at subscribe and at declare with a ConfigError naming the backend"""
    bus = await polybus_bus_factory()
    if bus.capabilities.key_order:
        pytest.skip(f"not applicable: {polybus_target.backend} has key order (tests 7 certify it)")
    topic, group = polybus_names.topic(), polybus_names.group()
    with pytest.raises(ConfigError) as at_subscribe:
        bus.subscribe(topic, group=group, ordering="key")
    with pytest.raises(ConfigError) as at_declare:
        await bus.declare(topic, group, ordering="key")
    for refusal in (at_subscribe.value, at_declare.value):
        assert refusal.field == "ordering"
        assert polybus_target.backend in str(refusal), f"the backend is not named: {refusal}"

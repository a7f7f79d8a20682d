"""Ordering per group on a real nats-server: how each ordering is stored, the refusal
to reopen a group with the other one, and what a key-ordered group costs and keeps
(one message in flight for the whole group; in-place redelivery of a nacked keyed
message; fail-over keeps the order)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import nats_support as support
import pytest
from nats.aio.client import Client as NATS

import polybus
from polybus import Bus, Message, Outgoing
from polybus.errors import ConfigError
from polybus_nats import NatsAdapter
from polybus_nats._topology import GroupRef, group_ref

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


def _ref(bus: Bus, topic: str, group: str) -> GroupRef:
    assert isinstance(bus.adapter, NatsAdapter)
    return group_ref(bus.adapter.settings, topic, group)


async def _info(raw: NATS, ref: GroupRef) -> nats.js.api.ConsumerInfo:
    return await raw.jetstream().consumer_info(ref.topic.stream, ref.consumer)


async def test_each_ordering_is_stored_with_its_group(bus: Bus, raw: NATS) -> None:
    topic, plain, keyed = support.name("ord"), support.name("none"), support.name("key")
    await bus.declare(topic, plain)
    await bus.declare(topic, keyed, ordering="key")
    plain_info = await _info(raw, _ref(bus, topic, plain))
    keyed_info = await _info(raw, _ref(bus, topic, keyed))
    assert plain_info.config.description == f"polybus group {plain!r}"
    assert keyed_info.config.description == f"polybus group {keyed!r} ordered by key"
    # competing consumers share up to max_ack_pending; a key-ordered group has one
    assert plain_info.config.max_ack_pending == 10_000
    assert keyed_info.config.max_ack_pending == 1
    assert plain_info.config.max_deliver == keyed_info.config.max_deliver == -1
    # both orderings consume
    ids = await bus.publish_many(topic, [Outgoing(b"a", key="k"), Outgoing(b"b", key="k")])
    for group, ordering in ((plain, "none"), (keyed, "key")):
        got = []
        async with bus.subscribe(topic, group=group, ordering=ordering) as sub:
            for _ in ids:  # a key's next message comes once the earlier one is settled
                got.append(await sub.get(timeout=10))
                await got[-1].ack()
        assert [m.id for m in got] == ids


@pytest.mark.parametrize(("created", "asked"), [("none", "key"), ("key", "none")])
async def test_reopening_a_group_with_the_other_ordering_is_refused(
    bus: Bus, nats_url: str, created: str, asked: str
) -> None:
    topic, group = support.name("conflict"), support.name("g")
    await bus.declare(topic, group, ordering=created)
    # another process (bus): the broker's record is what refuses, not this bus's memory
    async with polybus.connect(nats_url) as other:
        with pytest.raises(ConfigError) as declared:
            await other.declare(topic, group, ordering=asked)
        with pytest.raises(ConfigError) as subscribed:
            async with other.subscribe(topic, group=group, ordering=asked):
                pass
        async with other.subscribe(topic, group=group, ordering=created):
            pass  # the stored ordering still opens
    for caught in (declared, subscribed):
        text = str(caught.value)
        assert caught.value.field == "ordering"
        assert f"exists with ordering={created!r}" in text
        assert group in text
        assert "new group name" in text


async def test_declaring_restores_a_key_ordered_group_s_single_slot(
    bus: Bus, raw: NATS, nats_url: str
) -> None:
    topic, group = support.name("slot"), support.name("g")
    await bus.declare(topic, group, ordering="key")
    ref = _ref(bus, topic, group)
    config = (await _info(raw, ref)).config
    config.max_ack_pending = 5  # changed by hand: key order would break
    await raw.jetstream().add_consumer(ref.topic.stream, config)
    assert (await _info(raw, ref)).config.max_ack_pending == 5
    async with polybus.connect(nats_url) as other:  # this bus declared it already
        await other.declare(topic, group, ordering="key")
    assert (await _info(raw, ref)).config.max_ack_pending == 1


async def test_key_ordered_group_has_one_message_in_flight(nats_url: str) -> None:
    """The cost of key order on JetStream: while one consumer holds a message, no
    consumer of the group gets another, not even one of another key."""
    topic, group = support.name("serial"), support.name("g")
    async with polybus.connect(nats_url) as one, polybus.connect(nats_url) as two:
        await one.declare(topic, group, ordering="key")
        ids = await one.publish_many(
            topic, [Outgoing(b"a1", key="a"), Outgoing(b"b1", key="b"), Outgoing(b"a2", key="a")]
        )
        subs = [
            b.subscribe(topic, group=group, ordering="key", max_in_flight=8) for b in (one, two)
        ]
        async with subs[0], subs[1]:
            order: list[str] = []
            for _ in ids:
                getting = [asyncio.create_task(s.get()) for s in subs]
                done, _pending = await asyncio.wait(getting, return_when=asyncio.FIRST_COMPLETED)
                held = [t.result() for t in done]
                assert len(held) == 1, "two messages of the group were in flight at once"
                # nobody else gets a message while this one is unsettled
                others = [t for t in getting if t not in done]
                await asyncio.sleep(0.5)
                assert not any(t.done() for t in others)
                for t in others:
                    t.cancel()
                await asyncio.gather(*others, return_exceptions=True)
                order.append(held[0].id)
                await held[0].ack()
    assert order == ids


async def test_nacked_keyed_message_stays_in_flight_and_comes_back_first(
    bus: Bus, raw: NATS
) -> None:
    """The core redelivers a nacked keyed message in place: JetStream never sees a NAK
    (no redelivery counted), so no later message of the group overtakes it."""
    topic, group = support.name("nack"), support.name("g")
    await bus.declare(topic, group, ordering="key")
    first, second = await bus.publish_many(
        topic, [Outgoing(b"1", key="k"), Outgoing(b"2", key="k")]
    )
    async with bus.subscribe(topic, group=group, ordering="key") as sub:
        msg = await sub.get(timeout=10)
        await msg.nack()
        again = await sub.get(timeout=10)
        info = await _info(raw, _ref(bus, topic, group))
        await again.ack()
        last = await sub.get(timeout=10)
        await last.ack()
    assert (msg.id, again.id, last.id) == (first, first, second)
    assert (msg.delivery_attempt, again.delivery_attempt) == (1, 2)
    assert info.num_redelivered == 0
    assert info.num_ack_pending == 1


async def test_fail_over_after_a_crash_keeps_key_order(nats_url: str, raw: NATS) -> None:
    """A consumer dies holding a key's first message (a plain client that never
    settles): nothing else of the group is delivered meanwhile; after ack_wait the
    message comes back first, to another consumer, then the key's next one."""
    topic, group = support.name("failover"), support.name("g")
    async with polybus.connect(nats_url, ack_wait=1.0) as bus:
        await bus.declare(topic, group, ordering="key")
        first, second = await bus.publish_many(
            topic, [Outgoing(b"1", key="k"), Outgoing(b"2", key="k")]
        )
        ref = _ref(bus, topic, group)
        crashed = await nats.connect(nats_url)
        psub = await crashed.jetstream().pull_subscribe_bind(ref.consumer, ref.topic.stream)
        (taken,) = await psub.fetch(1, timeout=10)
        await crashed.close()  # dies without settling
        async with bus.subscribe(topic, group=group, ordering="key") as sub:
            back = await sub.get(timeout=10)
            await back.ack()
            nxt = await sub.get(timeout=10)
            await nxt.ack()
    assert taken.metadata.sequence.stream == 1
    assert (back.id, back.delivery_attempt) == (first, 2)
    assert (nxt.id, nxt.delivery_attempt) == (second, 1)


async def test_closing_a_key_ordered_consumer_hands_the_message_on(nats_url: str) -> None:
    topic, group = support.name("handoff"), support.name("g")
    async with polybus.connect(nats_url) as one, polybus.connect(nats_url) as two:
        await one.declare(topic, group, ordering="key")
        ids = await one.publish_many(topic, [Outgoing(f"{i}", key="k") for i in range(3)])
        sub_two = two.subscribe(topic, group=group, ordering="key")
        async with sub_two:
            async with one.subscribe(topic, group=group, ordering="key") as sub_one:
                held = await sub_one.get(timeout=10)
            # closed unsettled: NAKed, back at once (ack_wait is 30 s)
            rest: list[Message] = []
            while len(rest) < 3:
                msg = await sub_two.get(timeout=10)
                rest.append(msg)
                await msg.ack()
    assert held.id == ids[0]
    assert [m.id for m in rest] == ids
    assert rest[0].delivery_attempt == 2

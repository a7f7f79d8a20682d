"""``bus.lag`` on NATS JetStream, beyond the conformance test: messages delivered and not
acked (in flight, NAKed with a delay) count, the age is that of the oldest unsettled
message (not of one the group never had), reading changes nothing, and a group or
topic that does not exist is a ConfigError."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import nats_support as support
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

import polybus
from polybus import Bus, Lag
from polybus.errors import ConfigError
from polybus_nats import NatsAdapter
from polybus_nats._topology import GroupRef, group_ref

pytestmark = pytest.mark.timeout(60)
IDLE = 10.0


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


def _position(info: ConsumerInfo) -> tuple[object, ...]:
    return (info.delivered, info.ack_floor, info.num_ack_pending, info.num_pending)


async def _steady(js: JetStreamContext, ref: GroupRef) -> ConsumerInfo:
    """The consumer's info once it stayed the same for half a second."""
    info: ConsumerInfo = await js.consumer_info(ref.topic.stream, ref.consumer)
    deadline = time.monotonic() + IDLE
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        again: ConsumerInfo = await js.consumer_info(ref.topic.stream, ref.consumer)
        if _position(again) == _position(info):
            return again
        info = again
    pytest.fail("the consumer's position kept moving")


async def _settled_count(bus: Bus, topic: str, group: str, expected: int) -> Lag:
    """The lag once the server applied the acks sent (they are not confirmed)."""
    lag = await bus.lag(topic, group)
    deadline = time.monotonic() + IDLE
    while lag.messages != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        lag = await bus.lag(topic, group)
    assert lag.messages == expected, lag
    return lag


def test_capabilities() -> None:
    caps = NatsAdapter.from_url("nats://127.0.0.1:4222", {}).capabilities
    assert caps.lag_messages
    assert caps.lag_seconds


async def test_a_group_or_topic_that_does_not_exist_is_a_config_error(bus: Bus) -> None:
    topic = support.name("lag-missing")
    await bus.declare(topic, support.name("g"))
    with pytest.raises(ConfigError, match="nats: no group") as caught:
        await bus.lag(topic, "never-declared")
    assert caught.value.field == "group"
    with pytest.raises(ConfigError, match="nats: no group") as caught:
        await bus.lag(support.name("no-such-topic"), "g")
    assert caught.value.field == "group"


async def test_an_empty_backlog_has_no_age(bus: Bus) -> None:
    topic, group = support.name("lag-empty"), support.name("g")
    await bus.declare(topic, group)
    assert await bus.lag(topic, group) == Lag(0, None)
    await bus.publish_many(topic, ["a", "b"])
    async with bus.subscribe(topic, group=group) as sub:
        for _ in range(2):
            await (await sub.get(timeout=IDLE)).ack()
        assert await _settled_count(bus, topic, group, 0) == Lag(0, None)


async def test_delivered_unacked_and_delayed_naks_count_and_reading_changes_nothing(
    bus: Bus, raw: NATS
) -> None:
    topic, group = support.name("lag-inflight"), support.name("g")
    await bus.declare(topic, group)
    ref = _ref(bus, topic, group)
    await bus.publish(topic, "oldest")
    await asyncio.sleep(1.5)  # the age of the one held unsettled
    published = time.time()
    await bus.publish_many(topic, [f"m{i}" for i in range(5)])
    js = raw.jetstream()
    async with bus.subscribe(topic, group=group, max_in_flight=3) as sub:
        held = await sub.get(timeout=IDLE)  # "oldest": in flight, never acked here
        delayed = await sub.get(timeout=IDLE)
        await delayed.nack(delay=60)  # NAKed with a delay: still the group's
        acked = await sub.get(timeout=IDLE)
        await acked.ack()
        lag = await _settled_count(bus, topic, group, 5)
        assert lag.oldest_age is not None
        assert lag.oldest_age >= time.time() - published + 1.0, lag
        # reading the lag delivers nothing and counts no delivery (once the
        # subscription stopped fetching: it refills its free slots)
        before = await _steady(js, ref)
        for _ in range(3):
            await bus.lag(topic, group)
        after = await js.consumer_info(ref.topic.stream, ref.consumer)
        assert _position(after) == _position(before)
        assert held.delivery_attempt == 1
        await held.ack()
        lag = await _settled_count(bus, topic, group, 4)
        # the oldest unsettled is now the delayed one, published with the rest
        assert lag.oldest_age is not None
        assert time.time() - published - 1.0 <= lag.oldest_age <= time.time() - published + 1.0


async def test_the_age_is_of_the_groups_messages_not_of_older_ones_in_the_stream(
    bus: Bus,
) -> None:
    """A group declared on a topic that already holds messages: until its first message
    is acked, nats-server 2.9 reports an ack floor of 0, whose next message is one from
    before the group existed. The age is that of the group's own first message."""
    topic, group = support.name("lag-late"), support.name("late")
    await bus.declare(topic)
    await bus.publish_many(topic, [f"before-{i}" for i in range(20)])
    await asyncio.sleep(2.0)  # how much older those are
    await bus.declare(topic, group)
    published = time.time()
    await bus.publish_many(topic, [f"after-{i}" for i in range(5)])
    async with bus.subscribe(topic, group=group, max_in_flight=2) as sub:
        first = await sub.get(timeout=IDLE)  # delivered, not acked
        assert first.body == b"after-0"
        lag = await _settled_count(bus, topic, group, 5)
        assert lag.oldest_age is not None
        assert lag.oldest_age <= time.time() - published + 0.5, lag
        # acking a later one (out of order) leaves the first the oldest
        second = await sub.get(timeout=IDLE)
        await second.ack()
        lag = await _settled_count(bus, topic, group, 4)
        assert lag.oldest_age is not None
        assert lag.oldest_age <= time.time() - published + 0.5, lag
        await first.ack()
        await _settled_count(bus, topic, group, 3)


async def test_a_deleted_message_is_skipped(bus: Bus, raw: NATS) -> None:
    topic, group = support.name("lag-gap"), support.name("g")
    await bus.declare(topic, group)
    ref = _ref(bus, topic, group)
    await bus.publish(topic, "deleted")
    await asyncio.sleep(1.5)
    published = time.time()
    await bus.publish_many(topic, ["kept-1", "kept-2"])
    info = await raw.jetstream().stream_info(ref.topic.stream)
    await raw.jetstream().delete_msg(ref.topic.stream, info.state.first_seq)
    lag = await bus.lag(topic, group)
    assert lag.messages == 2
    assert lag.oldest_age is not None
    assert lag.oldest_age <= time.time() - published + 0.5, lag


async def test_dead_letter_lag_is_the_dead_letter_groups(bus: Bus) -> None:
    topic, group = support.name("lag-dlq"), support.name("g")
    await bus.declare(topic, group)
    await bus.publish(topic, "bad")
    async with bus.subscribe(topic, group=group) as sub:
        await (await sub.get(timeout=IDLE)).dead_letter("test")
    await _settled_count(bus, topic, group, 0)
    depth = await bus.dead_letter_lag(topic, group)
    assert depth.messages == 1
    assert depth.oldest_age is not None
    assert depth.oldest_age < 60

"""NATS JetStream adapter behaviour against a real nats-server: topology conflicts,
errors, size limits, in-progress acks and the MAX_DELIVERIES advisory."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats_support as support
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

import polybus
from polybus import Bus, headers
from polybus.errors import BrokerUnavailable, ConfigError, MessageTooLarge, PublishError
from polybus_nats import NatsAdapter
from polybus_nats._topology import group_ref, topic_ref

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def url(nats_url: str) -> str:
    return nats_url


@pytest.fixture
async def bus(url: str) -> AsyncIterator[Bus]:
    async with polybus.connect(url) as opened:
        yield opened


@pytest.fixture
async def raw(url: str) -> AsyncIterator[NATS]:
    nc = await nats.connect(url)
    yield nc
    await nc.close()


def _adapter(bus: Bus) -> NatsAdapter:
    assert isinstance(bus.adapter, NatsAdapter)
    return bus.adapter


async def _eventually(condition: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{what} did not happen within {within}s")


# -- connection -----------------------------------------------------------------------


async def test_unreachable_server_raises_broker_unavailable() -> None:
    port = support.free_port()
    bus = polybus.connect(f"nats://127.0.0.1:{port}?connect_timeout=1")
    with pytest.raises(BrokerUnavailable, match=str(port)):
        await bus.open()


async def test_server_without_jetstream_is_a_config_error(tmp_path: Path) -> None:
    with (
        support.private_server(tmp_path, jetstream=False) as server,
        pytest.raises(ConfigError, match="JetStream") as caught,
    ):
        await polybus.connect(server.url).open()
    assert caught.value.field == "url"


# -- topology -------------------------------------------------------------------------


async def test_creation_is_idempotent_and_groups_start_at_creation(bus: Bus) -> None:
    topic, group, late = support.name("idem"), support.name("g"), support.name("late")
    await bus.declare(topic, group)
    await bus.declare(topic, group)
    await _adapter(bus).ensure_topic(topic)
    first = await bus.publish(topic, b"before-late-group")
    await bus.declare(topic, late)
    second = await bus.publish(topic, b"after-late-group")
    async with bus.subscribe(topic, group=late) as sub:
        msg = await sub.get(timeout=10)
        await msg.ack()
    assert msg.id == second
    assert msg.id != first
    async with bus.subscribe(topic, group=group) as sub:
        got = [await sub.get(timeout=10), await sub.get(timeout=10)]
        for m in got:
            await m.ack()
    assert [m.id for m in got] == [first, second]


async def test_conflicting_stream_is_a_clear_config_error(bus: Bus, raw: NATS) -> None:
    topic = support.name("clash")
    ref = topic_ref(_adapter(bus).settings, topic)
    js = raw.jetstream()
    await js.add_stream(
        StreamConfig(
            name=ref.stream, subjects=[f"other.{topic}"], retention=RetentionPolicy.WORK_QUEUE
        )
    )
    try:
        with pytest.raises(ConfigError) as caught:
            await bus.declare(topic)
    finally:
        await js.delete_stream(ref.stream)
    text = str(caught.value)
    assert caught.value.field == "topic"
    assert ref.stream in text
    assert "subjects" in text
    assert "retention" in text


async def test_sanitised_name_collision_is_detected(bus: Bus) -> None:
    base = support.name("col")
    await bus.declare(f"{base}.x")
    try:
        with pytest.raises(ConfigError, match="conflicts"):
            await bus.declare(f"{base}_x")
    finally:
        js = _adapter(bus).js
        await js.delete_stream(topic_ref(_adapter(bus).settings, f"{base}.x").stream)


async def test_conflicting_consumer_is_a_clear_config_error(bus: Bus, raw: NATS) -> None:
    topic, group = support.name("cc"), support.name("push")
    await bus.declare(topic)
    ref = group_ref(_adapter(bus).settings, topic, group)
    await raw.jetstream().add_consumer(
        ref.topic.stream,
        ConsumerConfig(
            durable_name=ref.consumer, deliver_subject=f"push.{group}", ack_policy=AckPolicy.NONE
        ),
    )
    with pytest.raises(ConfigError) as caught:
        await bus.declare(topic, group)
    assert caught.value.field == "group"
    assert "push consumer" in str(caught.value)
    assert "ack policy" in str(caught.value)


async def test_odd_topic_and_group_names_work(bus: Bus) -> None:
    topic, group = f"orders / {support.name('ü')} *", "team a.b"
    await bus.declare(topic, group)
    msg_id = await bus.publish(topic, b"odd")
    async with bus.subscribe(topic, group=group) as sub:
        msg = await sub.get(timeout=10)
        await msg.ack()
    assert (msg.id, msg.topic, msg.group, msg.body) == (msg_id, topic, group, b"odd")


# -- publishing -----------------------------------------------------------------------


async def test_too_large_message_is_refused_with_the_limit(bus: Bus) -> None:
    topic = support.name("big")
    limit = bus.capabilities.max_message_size
    assert limit == _adapter(bus).nc.max_payload - 4096
    with pytest.raises(MessageTooLarge) as caught:
        await bus.publish(topic, b"x" * (limit + 1))
    assert caught.value.limit == limit
    # headers count on the wire: the adapter refuses what the server would reject
    many = {f"h{i}": "v" for i in range(2000)}
    body = b"x" * (limit - sum(len(k) + 1 for k in many) - 100)
    with pytest.raises(MessageTooLarge, match="max_payload"):
        await bus.publish(topic, body, headers=many)


async def test_headers_survive_byte_exact(bus: Bus) -> None:
    topic, group = support.name("hdr"), support.name("g")
    await bus.declare(topic, group)
    sent = {"multi": "a\r\nb\n", "edge": " x ", "pct": "%41", "empty": "", "uni": "ü→✓"}
    await bus.publish(topic, b"h", headers=sent, key="k\n1")
    async with bus.subscribe(topic, group=group) as sub:
        msg = await sub.get(timeout=10)
        await msg.ack()
    assert msg.headers == sent
    assert msg.key == "k\n1"


async def test_publish_to_a_deleted_stream_is_a_retryable_publish_error(bus: Bus) -> None:
    topic = support.name("gone")
    await bus.declare(topic)
    await _adapter(bus).js.delete_stream(topic_ref(_adapter(bus).settings, topic).stream)
    with pytest.raises(PublishError) as caught:
        await bus.publish_many(topic, [polybus.Outgoing(b"a", id="a1"), polybus.Outgoing(b"b")])
    assert caught.value.retryable
    assert "a1" in caught.value.failed_ids
    assert len(caught.value.failed_ids) == 2


# -- consuming ------------------------------------------------------------------------


async def test_long_handler_is_kept_alive_with_in_progress(url: str) -> None:
    topic, group = support.name("wpi"), support.name("g")
    async with polybus.connect(url, ack_wait=1.0) as bus:
        await bus.declare(topic, group)
        await bus.publish(topic, b"slow")
        async with bus.subscribe(topic, group=group) as sub:
            msg = await sub.get(timeout=10)
            # hold the message for three ack_wait periods: without +WPI it would be
            # redelivered twice meanwhile
            await asyncio.sleep(3.2)
            ref = group_ref(_adapter(bus).settings, topic, group)
            info = await _adapter(bus).js.consumer_info(ref.topic.stream, ref.consumer)
            await msg.ack()
    assert msg.delivery_attempt == 1
    assert info.num_redelivered == 0
    assert info.num_ack_pending == 1


async def test_max_deliveries_advisory_dead_letters_what_polybus_never_settled(
    url: str, raw: NATS
) -> None:
    """A consumer dies holding the last allowed delivery: JetStream gives up (at the
    group's next pull) and its advisory makes the live consumer publish the copy."""
    topic, group = support.name("adv"), support.name("g")
    bus = polybus.connect(url, ack_wait=1.0)
    # limit 1: JetStream max_deliver is 2
    async with bus, bus.subscribe(topic, group=group, max_deliveries=1) as sub:
        msg_id = await bus.publish(topic, b"orphan", key="k", headers={"x": "1"})
        ref = group_ref(_adapter(bus).settings, topic, group)
        psub = await raw.jetstream().pull_subscribe_bind(ref.consumer, ref.topic.stream)
        deliveries = []
        for _ in range(2):  # two deliveries that a "crashed" client never settles
            (got,) = await psub.fetch(1, timeout=10)
            deliveries.append(got.metadata.num_delivered)
        await psub.unsubscribe()
        # the live polybus consumer pulls; JetStream then drops the expired delivery
        pulling = asyncio.create_task(sub.get())
        async with bus.dead_letters(topic, group=group) as dead:
            copy = await dead.get(timeout=15)
            await copy.ack()
        assert not pulling.done(), "the dropped message must not reach the group"
        pulling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pulling
    assert deliveries == [1, 2]
    assert copy.id == msg_id
    assert copy.body == b"orphan"
    assert copy.key == "k"
    assert copy.headers["x"] == "1"
    assert "JetStream gave up after 2 deliveries" in copy.headers[headers.DLQ_REASON]
    assert copy.headers[headers.DLQ_ORIGINAL_GROUP] == group


async def test_close_returns_buffered_and_unsettled_messages(bus: Bus, url: str) -> None:
    topic, group = support.name("close"), support.name("g")
    await bus.declare(topic, group)
    ids = await bus.publish_many(topic, [f"m{i}".encode() for i in range(10)])
    async with bus.subscribe(topic, group=group, max_in_flight=10) as sub:
        first = await sub.get(timeout=10)
        await _eventually(lambda: _done(sub.unsettled == 10), 10, "ten messages fetched")
        await first.ack()
    async with polybus.connect(url) as other, other.subscribe(topic, group=group) as sub:
        again: list[polybus.Message] = []
        while len(again) < 9:
            msg = await sub.get(timeout=10)
            again.append(msg)
            await msg.ack()
    assert sorted(m.id for m in again) == sorted(ids[1:])
    assert all(m.delivery_attempt == 2 for m in again)


async def _done(value: bool) -> bool:
    return value

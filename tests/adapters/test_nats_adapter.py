"""NATS JetStream adapter behaviour against a real nats-server: connection errors,
topology (creation, conflicts, groups of earlier versions), size limits, leases,
delivery limits, closing and a deleted group."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats_support as support
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StreamConfig

import polybus
from polybus import Bus, headers
from polybus.errors import (
    BrokerUnavailable,
    ConfigError,
    MessageTooLarge,
    PolybusError,
    PublishError,
)
from polybus.spi import Envelope, GroupSpec
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
    """A plain nats-py connection: what a native client (or an operator) sees."""
    nc = await nats.connect(url)
    yield nc
    await nc.close()


def _adapter(bus: Bus) -> NatsAdapter:
    assert isinstance(bus.adapter, NatsAdapter)
    return bus.adapter


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


async def test_refused_credentials_are_a_config_error(tmp_path: Path) -> None:
    with support.private_server(tmp_path, login=("alice", "right")) as server:
        wrong = f"nats://alice:wr0ng@127.0.0.1:{server.port}?connect_timeout=2"
        with pytest.raises(ConfigError, match="refused the credentials") as caught:
            await polybus.connect(wrong).open()
        assert caught.value.field == "url"
        assert "wr0ng" not in str(caught.value)
        async with polybus.connect(f"nats://alice:right@127.0.0.1:{server.port}") as bus:
            await bus.declare(support.name("auth"))


# -- topology -------------------------------------------------------------------------


async def test_creation_is_idempotent_and_groups_start_at_creation(bus: Bus) -> None:
    topic, group, late = support.name("idem"), support.name("g"), support.name("late")
    await bus.declare(topic, group)
    await bus.declare(topic, group)
    await _adapter(bus).declare(topic, None)
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


async def test_sanitised_name_collision_is_detected(bus: Bus, raw: NATS) -> None:
    base = support.name("col")
    await bus.declare(f"{base}.x")
    try:
        with pytest.raises(ConfigError, match="conflicts"):
            await bus.declare(f"{base}_x")
    finally:
        stream = topic_ref(_adapter(bus).settings, f"{base}.x").stream
        await raw.jetstream().delete_stream(stream)


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


async def test_group_of_an_earlier_version_is_accepted_without_its_limit(
    bus: Bus, raw: NATS
) -> None:
    """Earlier versions stored max_deliveries + 1 as max_deliver; JetStream would stop
    there, so declaring the group again makes it unlimited (the core counts now)."""
    topic, group = support.name("old"), support.name("g")
    await bus.declare(topic)
    ref = group_ref(_adapter(bus).settings, topic, group)
    js = raw.jetstream()
    await js.add_consumer(
        ref.topic.stream,
        ConsumerConfig(
            durable_name=ref.consumer,
            description=f"polybus group {group!r}",
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            max_deliver=4,
        ),
    )
    await bus.declare(topic, group)
    info = await js.consumer_info(ref.topic.stream, ref.consumer)
    assert info.config.max_deliver == -1
    msg_id = await bus.publish(topic, b"still-read")
    async with bus.subscribe(topic, group=group) as sub:
        msg = await sub.get(timeout=10)
        await msg.ack()
    assert msg.id == msg_id


async def test_odd_topic_and_group_names_work(bus: Bus) -> None:
    topic, group = f"orders / {support.name('ü')} *", "team a.b"
    await bus.declare(topic, group)
    msg_id = await bus.publish(topic, b"odd")
    async with bus.subscribe(topic, group=group) as sub:
        msg = await sub.get(timeout=10)
        await msg.ack()
    assert (msg.id, msg.topic, msg.group, msg.body) == (msg_id, topic, group, b"odd")


# -- publishing -----------------------------------------------------------------------


async def test_too_large_message_is_refused_with_the_limit(bus: Bus, raw: NATS) -> None:
    topic = support.name("big")
    limit = bus.capabilities.max_message_size
    assert limit == raw.max_payload - 4096
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


async def test_publish_to_a_deleted_stream_is_a_retryable_publish_error(
    bus: Bus, raw: NATS
) -> None:
    topic = support.name("gone")
    await bus.declare(topic)
    await raw.jetstream().delete_stream(topic_ref(_adapter(bus).settings, topic).stream)
    with pytest.raises(PublishError) as caught:
        await bus.publish_many(topic, [polybus.Outgoing(b"a", id="a1"), polybus.Outgoing(b"b")])
    assert caught.value.retryable
    assert "a1" in caught.value.failed_ids
    assert len(caught.value.failed_ids) == 2


# -- consuming ------------------------------------------------------------------------


async def test_long_handler_keeps_its_lease_through_extend(url: str, raw: NATS) -> None:
    """lease = ack_wait: the core renews it (+WPI through Consumer.extend) while the
    message is unsettled, so JetStream does not redeliver it behind the handler's back."""
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
            info = await raw.jetstream().consumer_info(ref.topic.stream, ref.consumer)
            await msg.ack()
    assert msg.delivery_attempt == 1
    assert info.num_redelivered == 0
    assert info.num_ack_pending == 1


async def test_delivery_limit_is_polybus_s_jetstream_never_gives_up(url: str, raw: NATS) -> None:
    """Deliveries never settled (a consumer that crashed, twice) count: the core sees
    delivery 3 > max_deliveries=2 and dead-letters the message unseen; JetStream itself
    has no limit (max_deliver -1), so nothing is dropped behind polybus's back."""
    topic, group = support.name("limit"), support.name("g")
    async with polybus.connect(url, ack_wait=1.0) as bus:
        await bus.declare(topic, group)
        msg_id = await bus.publish(topic, b"orphan", key="k", headers={"x": "1"})
        ref = group_ref(_adapter(bus).settings, topic, group)
        js = raw.jetstream()
        assert (await js.consumer_info(ref.topic.stream, ref.consumer)).config.max_deliver == -1
        psub = await js.pull_subscribe_bind(ref.consumer, ref.topic.stream)
        deliveries = []
        for _ in range(2):  # two deliveries that a "crashed" client never settles
            (got,) = await psub.fetch(1, timeout=10)
            deliveries.append(got.metadata.num_delivered)
        await psub.unsubscribe()
        async with (
            bus.subscribe(topic, group=group, max_deliveries=2) as sub,
            bus.dead_letters(topic, group=group) as dead,
        ):
            pulling = asyncio.create_task(sub.get())  # the group consumes meanwhile
            copy = await dead.get(timeout=15)
            await copy.ack()
            assert not pulling.done(), "delivery 3 must not reach the group"
            pulling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pulling
    assert deliveries == [1, 2]
    assert (copy.id, copy.body, copy.key, copy.headers["x"]) == (msg_id, b"orphan", "k", "1")
    assert copy.headers[headers.DLQ_ATTEMPTS] == "2"
    assert "delivery limit of 2" in copy.headers[headers.DLQ_REASON]
    assert copy.headers[headers.DLQ_ORIGINAL_GROUP] == group


async def test_close_returns_buffered_and_unsettled_messages(bus: Bus, url: str, raw: NATS) -> None:
    topic, group = support.name("close"), support.name("g")
    await bus.declare(topic, group)
    ref = group_ref(_adapter(bus).settings, topic, group)
    ids = await bus.publish_many(topic, [f"m{i}".encode() for i in range(10)])
    async with bus.subscribe(topic, group=group, max_in_flight=10) as sub:
        first = await sub.get(timeout=10)
        # JetStream delivered all ten to this subscription; one is handed out, the
        # others wait in it (in the core or the consumer's buffer)
        await support.eventually(
            lambda: _ack_pending(raw, ref.topic.stream, ref.consumer, 10), 10, "ten delivered"
        )
        await first.ack()
    async with polybus.connect(url) as other, other.subscribe(topic, group=group) as sub:
        again: list[polybus.Message] = []
        while len(again) < 9:
            msg = await sub.get(timeout=10)
            again.append(msg)
            await msg.ack()
    assert sorted(m.id for m in again) == sorted(ids[1:])
    # NAKed at close: back at once, one attempt higher (ack_wait is 30 s)
    assert all(m.delivery_attempt == 2 for m in again)


async def test_a_message_nacked_just_before_close_is_back_at_once(bus: Bus, url: str) -> None:
    """A NAK while the consumer's pull request waits hands the message straight back to
    that request; a close right after must not leave it on the wire to an inbox nobody
    reads (nats-server 2.9 then holds it until ack_wait, 30 s, or hands it out again
    with its delivery count lowered): it is the next consumer's at once, counted as
    redelivered. The race is narrow (about one close in a hundred lost it before close
    waited for it), so it is run many times."""
    topic, group = support.name("nakclose"), support.name("g")
    await bus.declare(topic, group)
    async with polybus.connect(url) as other:
        for attempt in range(300):
            sent = await bus.publish(topic, f"m{attempt}".encode())
            async with other.subscribe(topic, group=group) as sub:
                msg = await sub.get(timeout=10)
                assert msg.id == sent
                await msg.nack()
            async with bus.subscribe(topic, group=group) as sub:
                again = await sub.get(timeout=10)  # ack_wait is 30 s
                # (delivered again to the closing consumer on its way back: attempt 3)
                assert again.id == sent, f"attempt {attempt}"
                assert again.delivery_attempt >= 2, f"attempt {attempt}: not counted as redelivered"
                await again.ack()


async def _ack_pending(raw: NATS, stream: str, consumer: str, count: int) -> bool:
    return (await raw.jetstream().consumer_info(stream, consumer)).num_ack_pending == count


async def test_deleted_group_is_a_permanent_error_not_an_outage(bus: Bus, raw: NATS) -> None:
    topic, group = support.name("del"), support.name("g")
    await bus.declare(topic, group)
    ref = group_ref(_adapter(bus).settings, topic, group)
    async with bus.subscribe(topic, group=group) as sub:
        waiting = asyncio.create_task(sub.get(timeout=20))
        # the subscription's pull request is pending on the server
        await support.eventually(
            lambda: _waiting(raw, ref.topic.stream, ref.consumer), 10, "a pending pull request"
        )
        await raw.jetstream().delete_consumer(ref.topic.stream, ref.consumer)
        with pytest.raises(PolybusError, match="deleted") as caught:
            await waiting
    assert not isinstance(caught.value, BrokerUnavailable)
    assert group in str(caught.value)


async def _waiting(raw: NATS, stream: str, consumer: str) -> bool:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        return (await raw.jetstream().consumer_info(stream, consumer)).num_waiting > 0
    return False


async def test_a_buffered_message_whose_lease_lapsed_is_not_handed_out(url: str, raw: NATS) -> None:
    """At the SPI: deliveries that arrive after receive() returned wait in the consumer;
    if nothing renews them for ack_wait, JetStream redelivers them, and the waiting
    copy is dropped (a stale copy could be processed twice or out of its key's order)."""
    topic, group = support.name("lapse"), support.name("g")
    adapter = NatsAdapter.from_url(url, {"ack_wait": 1.0, "fetch_expires": 5.0})
    await adapter.open()
    try:
        spec = GroupSpec(topic, group)
        await adapter.declare(topic, None)
        await adapter.declare(topic, spec)
        ref = group_ref(adapter.settings, topic, group)
        consumer = adapter.consumer(spec, max_in_flight=5)
        await consumer.open()
        await adapter.publish(topic, [Envelope(id="m1", body=b"1")])
        (first,) = await consumer.receive(5)  # its pull request stays open for 4 more
        await adapter.publish(topic, [Envelope(id="m2", body=b"2"), Envelope(id="m3", body=b"3")])
        await support.eventually(
            lambda: _ack_pending(raw, ref.topic.stream, ref.consumer, 3), 10, "m2, m3 buffered"
        )
        await asyncio.sleep(1.2)  # the subject: every lease lapses (nothing extends)
        seen: dict[str, int] = {}
        while len(seen) < 3:
            for msg in await consumer.receive(5):
                seen[msg.id] = msg.delivery_attempt
                await consumer.ack([msg])
        await consumer.close()
    finally:
        await adapter.close()
    assert first.id == "m1"
    assert seen == {"m1": 2, "m2": 2, "m3": 2}

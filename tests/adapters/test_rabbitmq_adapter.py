"""RabbitMQ adapter behaviour on the real broker (the ``rabbitmq_url`` fixture).

Native checks go through plain pika (:mod:`rabbitmq_support`), never through the
adapter: what a client that knows nothing of polybus sees.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pika
import pytest
from rabbitmq_support import Native, name

import polybus
from polybus.errors import BrokerUnavailable, ConfigError, PublishError
from polybus.spi import GroupSpec, Ordering
from polybus.stores import SQLiteStore
from polybus_rabbitmq import RabbitMQAdapter, RabbitMQConsumer
from polybus_rabbitmq._consumer import MAX_DELAY

WAIT = 20.0
"""Longest wait for a message that must come (a deadline, not a speed assertion)."""


@pytest.fixture
async def bus(rabbitmq_url: str) -> AsyncIterator[polybus.Bus]:
    async with polybus.connect(rabbitmq_url) as b:
        yield b


@pytest.fixture
def native(rabbitmq_url: str) -> Native:
    return Native(rabbitmq_url)


def _adapter(bus: polybus.Bus) -> RabbitMQAdapter:
    assert isinstance(bus.adapter, RabbitMQAdapter)
    return bus.adapter


# -- settings, errors, capabilities -------------------------------------------------


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        polybus.connect("amqp://127.0.0.1/?queue_type=stream")
    assert info.value.field == "queue_type"
    with pytest.raises(ConfigError) as info:
        polybus.connect("amqp://127.0.0.1/?prefetch=3")
    assert info.value.field == "prefetch"
    with pytest.raises(ConfigError) as info:
        polybus.connect("amqp://127.0.0.1/", options={"no_such_pika_option": 1})
    assert info.value.field == "options"
    with pytest.raises(ConfigError) as info:
        polybus.connect("amqp://127.0.0.1/?reconnect_max_delay=0")
    assert info.value.field == "reconnect_max_delay"


def test_removed_settings_say_what_replaces_them() -> None:
    with pytest.raises(ConfigError) as info:
        polybus.connect("amqp://127.0.0.1/?single_active_consumer=false")
    assert info.value.field == "single_active_consumer"
    assert "ordering" in str(info.value)
    with pytest.raises(ConfigError) as info:
        polybus.connect("amqp://127.0.0.1/", delivery_limit=3)
    assert info.value.field == "delivery_limit"
    assert "max_deliveries" in str(info.value)


def test_secrets_never_shown() -> None:
    b = polybus.connect("amqp://alice:s3cr3t-pw@127.0.0.1:5672/vh", options={"heartbeat": 5})
    assert "s3cr3t-pw" not in repr(b)
    assert "s3cr3t-pw" not in repr(b.adapter)
    assert "s3cr3t-pw" not in repr(_adapter(b).settings)
    with pytest.raises(ConfigError) as info:
        polybus.connect("amqp://127.0.0.1/", options={"sasl_password": "x1-hidden"})
    assert "x1-hidden" not in str(info.value)


def test_capabilities() -> None:
    quorum = polybus.connect("amqp://127.0.0.1/").capabilities
    classic = polybus.connect("amqp://127.0.0.1/?queue_type=classic").capabilities
    for caps in (quorum, classic):
        assert caps.competing_consumers
        assert caps.key_order
        assert not caps.key_order_competing
        assert not caps.native_dead_letter
        assert caps.delayed_redelivery
        assert caps.max_delay == MAX_DELAY
        assert not caps.stable_foreign_ids
    assert quorum.native_delivery_count
    assert not classic.native_delivery_count
    for caps in (quorum, classic):
        assert caps.lag_messages
        assert not caps.lag_seconds
    adapter = _adapter(polybus.connect("amqp://127.0.0.1/?publish_timeout=7"))
    assert adapter.publish_timeout == 7


async def test_unreachable_broker_is_reported_without_secret() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = polybus.connect(f"amqp://bob:pw-hidden-9@127.0.0.1:{port}/?connect_timeout=2")
    with pytest.raises(BrokerUnavailable) as info:
        await b.open()
    assert "pw-hidden-9" not in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)


async def test_refused_login_is_a_config_error(rabbitmq_url: str) -> None:
    wrong = rabbitmq_url.replace("guest:guest@", "guest:wrong-pw-7@")
    assert wrong != rabbitmq_url
    b = polybus.connect(wrong)
    with pytest.raises(ConfigError) as info:
        await b.open()
    assert info.value.field == "credentials"
    assert "wrong-pw-7" not in str(info.value)
    no_vhost = rabbitmq_url.rstrip("/") + "/no-such-vhost"
    with pytest.raises(ConfigError) as info:
        await polybus.connect(no_vhost).open()
    assert info.value.field == "credentials"


async def test_conflicting_exchange_is_a_config_error(bus: polybus.Bus, native: Native) -> None:
    topic = name()
    chan = await _adapter(bus).link.channel()
    await chan.call(
        lambda cb: chan.native.exchange_declare(topic, exchange_type="direct", callback=cb)
    )
    await chan.close()
    with pytest.raises(ConfigError) as info:
        await bus.declare(topic)
    assert "PRECONDITION_FAILED" in str(info.value)
    # only a throw-away channel died: the bus still works
    other = name()
    await bus.declare(other, "g")
    await bus.publish(other, b"still fine")
    assert await native.get(f"{other}.g") is not None


async def test_conflicting_queue_type_is_a_config_error(
    bus: polybus.Bus, rabbitmq_url: str
) -> None:
    topic = name()
    await bus.declare(topic, "g")
    async with polybus.connect(rabbitmq_url, queue_type="classic") as classic:
        with pytest.raises(ConfigError) as info:
            await classic.declare(topic, "g")
    assert info.value.field == "group"


async def test_unroutable_error_mode(rabbitmq_url: str) -> None:
    topic = name()
    async with polybus.connect(rabbitmq_url, on_unroutable="error") as strict:
        msg_id = "unroutable-1"
        with pytest.raises(PublishError) as info:
            await strict.publish(topic, b"to nobody", id=msg_id)
        assert info.value.failed_ids == (msg_id,)
        assert not info.value.retryable
        await strict.declare(topic, "g")
        await strict.publish(topic, b"to the group")


async def test_names_rabbitmq_refuses_are_fitted(bus: polybus.Bus, native: Native) -> None:
    reserved = f"amq.{name()}"  # RabbitMQ refuses user objects named amq.*
    long = name() + "-" + "x" * 300  # AMQP names are at most 255 bytes
    wide = name() + "-" + "é" * 200  # 200 characters, 400 bytes
    for topic in (reserved, long, wide):
        await bus.declare(topic, "g")
        sent = await bus.publish(topic, b"fitted", headers={"x-topic": topic[:20]})
        async with bus.subscribe(topic, group="g") as sub:
            msg = await sub.get(timeout=WAIT)
            await msg.ack()
        assert (msg.id, msg.topic) == (sent, topic)
    names = _adapter(bus).names
    for topic in (reserved, long, wide):
        for fitted in (names.exchange(topic), names.queue(topic, "g")):
            assert len(fitted.encode()) <= 255
            assert not fitted.startswith("amq.")
    # a name RabbitMQ accepts is used as it is: plain clients find it by that name
    plain = name()
    await bus.declare(plain, "g")
    assert names.queue(plain, "g") == f"{plain}.g"
    assert await native.exists(f"{plain}.g")


# -- the wire: polybus messages for plain clients, foreign messages for polybus --------


async def test_polybus_messages_are_plain_amqp(bus: polybus.Bus, native: Native) -> None:
    topic = name()
    await bus.declare(topic, "g")
    raw_id = await bus.publish(topic, b"\x00raw\xff", key="k1", headers={"x-a": "1"})
    json_id = await bus.publish(topic, {"n": 1, "s": "grüße"})
    got = [await native.get(f"{topic}.g") for _ in range(2)]
    assert all(g is not None for g in got)
    (_, raw_props, raw_body), (_, json_props, json_body) = got
    assert raw_body == b"\x00raw\xff"  # bytes as they are, no envelope
    assert raw_props.message_id == raw_id
    assert raw_props.delivery_mode == 2
    assert raw_props.headers["x-a"] == "1"  # user headers are native headers
    assert raw_props.headers["polybus-key"] == "k1"
    assert json_props.message_id == json_id
    assert json_props.content_type == "application/json"
    assert json.loads(json_body) == {"n": 1, "s": "grüße"}  # plain JSON text


async def test_foreign_message_mapping(bus: polybus.Bus, native: Native) -> None:
    topic = name()
    await bus.declare(topic, "g")
    props = pika.BasicProperties(
        content_type="text/plain",
        timestamp=1_700_000_000,
        headers={"x-str": "s", "x-int": 7, "x-bytes": b"raw"},
    )
    await native.publish(topic, b"\x01foreign\xfe", props)
    async with bus.subscribe(topic, group="g") as sub:
        msg = await sub.get(timeout=WAIT)
        await msg.ack()
    assert msg.body == b"\x01foreign\xfe"
    assert msg.headers == {"x-str": "s", "x-int": "7", "x-bytes": "raw"}
    assert msg.key is None  # AMQP carries no message key
    assert msg.content_type == "text/plain"
    assert msg.published_at is not None
    assert int(msg.published_at.timestamp()) == 1_700_000_000
    assert msg.delivery_attempt == 1
    assert msg.id.startswith("amqp-")


async def test_foreign_messages_over_two_connections_get_different_ids(
    rabbitmq_url: str, native: Native
) -> None:
    """Delivery tags restart at 1 on every channel: an id made of one would collide."""
    topic = name()
    ids = []
    for i in range(2):
        async with polybus.connect(rabbitmq_url) as b:
            await b.declare(topic, "g")
            await native.publish(topic, f"foreign-{i}".encode())
            async with b.subscribe(topic, group="g") as sub:
                msg = await sub.get(timeout=WAIT)
                await msg.ack()
            assert msg.body == f"foreign-{i}".encode()
            ids.append(msg.id)
    assert ids[0] != ids[1]


async def test_idempotency_keeps_two_foreign_messages_apart(
    rabbitmq_url: str, native: Native, tmp_path: Path
) -> None:
    topic = name()
    store = SQLiteStore(tmp_path / "seen.db")
    handled: list[bytes] = []
    for i in range(2):
        async with polybus.connect(rabbitmq_url) as b:
            await b.declare(topic, "g")
            await native.publish(topic, f"foreign-{i}".encode())
            worker = polybus.Worker(
                b, middleware=polybus.defaults(idempotency=store), handle_signals=False
            )
            done = asyncio.Event()

            @worker.handler(topic, group="g")
            async def handle(msg: polybus.Message, done: asyncio.Event = done) -> None:
                handled.append(msg.body)
                done.set()

            running = asyncio.create_task(worker.run())
            try:
                await asyncio.wait_for(done.wait(), WAIT)
            finally:
                await worker.stop()
                await running
    await store.close()
    assert handled == [b"foreign-0", b"foreign-1"]


async def test_foreign_redelivery_ids(bus: polybus.Bus, native: Native) -> None:
    """A native message_id is the id, kept across redeliveries; without one, each
    delivery gets a fresh id (AMQP gives no identity to keep)."""
    topic = name()
    await bus.declare(topic, "g")
    await native.publish(topic, b"named", pika.BasicProperties(message_id="native-7"))
    await native.publish(topic, b"anonymous")
    async with bus.subscribe(topic, group="g", max_in_flight=2) as sub:
        first = {m.body: m for m in [await sub.get(timeout=WAIT), await sub.get(timeout=WAIT)]}
        for msg in first.values():
            await msg.nack()
        again = {m.body: m for m in [await sub.get(timeout=WAIT), await sub.get(timeout=WAIT)]}
        for msg in again.values():
            await msg.ack()
    assert first[b"named"].id == again[b"named"].id == "native-7"
    assert first[b"anonymous"].id != again[b"anonymous"].id
    assert again[b"anonymous"].id.startswith("amqp-")
    assert [again[b].delivery_attempt for b in (b"named", b"anonymous")] == [2, 2]


# -- ordering per group -----------------------------------------------------------------

QUORUM = {"x-queue-type": "quorum"}
SINGLE_ACTIVE = {**QUORUM, "x-single-active-consumer": True}


async def test_ordering_none_is_a_shared_queue(bus: polybus.Bus, native: Native) -> None:
    topic = name()
    await bus.declare(topic, "g")
    assert await native.has_arguments(f"{topic}.g", QUORUM)
    assert not await native.has_arguments(f"{topic}.g", SINGLE_ACTIVE)


async def test_ordering_key_is_a_single_active_consumer_queue(
    bus: polybus.Bus, native: Native
) -> None:
    topic = name()
    await bus.declare(topic, "g", ordering="key")
    assert await native.has_arguments(f"{topic}.g", SINGLE_ACTIVE)
    assert not await native.has_arguments(f"{topic}.g", QUORUM)
    # the dead-letter group is unordered in both cases
    assert await native.has_arguments(f"{topic}.g.dlq.polybus-dlq", QUORUM)


@pytest.mark.parametrize(("first", "then"), [("key", "none"), ("none", "key")])
async def test_the_other_ordering_is_a_config_error(
    rabbitmq_url: str, first: str, then: str
) -> None:
    topic = name()
    async with polybus.connect(rabbitmq_url) as one:
        await one.declare(topic, "g", ordering=first)
    async with polybus.connect(rabbitmq_url) as other:  # another bus: the broker decides
        with pytest.raises(ConfigError) as info:
            await other.declare(topic, "g", ordering=then)
        with pytest.raises(ConfigError):
            async with other.subscribe(topic, group="g", ordering=then):
                pass
        # the group still works with the ordering it has
        await other.publish(topic, b"still usable")
        async with other.subscribe(topic, group="g", ordering=first) as sub:
            msg = await sub.get(timeout=WAIT)
            await msg.ack()
    assert info.value.field == "ordering"
    text = str(info.value)
    assert "'g'" in text
    assert f"ordering={first!r}" in text
    assert f"ordering={then!r}" in text
    assert "new group name" in text


async def test_queue_of_an_earlier_version_keeps_its_delivery_limit(
    rabbitmq_url: str, native: Native
) -> None:
    """Earlier versions declared x-delivery-limit and a dead-letter exchange; such a
    queue stays usable, and its ordering is still checked."""
    topic = name()
    old = {**SINGLE_ACTIVE, "x-delivery-limit": 4, "x-dead-letter-exchange": f"{topic}.g.dlq"}
    await native.declare_queue(f"{topic}.g", old, exchange=topic)
    async with polybus.connect(rabbitmq_url) as b:
        await b.declare(topic, "g", ordering="key")
        sent = await b.publish(topic, b"old queue", key="k")
        async with b.subscribe(topic, group="g", ordering="key") as sub:
            msg = await sub.get(timeout=WAIT)
            await msg.ack()
        assert msg.id == sent
    assert await native.has_arguments(f"{topic}.g", old)  # untouched
    async with polybus.connect(rabbitmq_url) as b:
        with pytest.raises(ConfigError) as info:  # not hidden behind the limit arguments
            await b.declare(topic, "g")
    assert info.value.field == "ordering"


async def test_dead_letter_queue_of_an_earlier_version_is_used(
    rabbitmq_url: str, native: Native
) -> None:
    """Earlier versions gave every group, its dead-letter group too, a single active
    consumer: the dead-letter group (always ordering none now) takes it as it is."""
    topic = name()
    dlq_topic = f"{topic}.g.dlq"
    await native.declare_queue(f"{dlq_topic}.polybus-dlq", SINGLE_ACTIVE, exchange=dlq_topic)
    async with polybus.connect(rabbitmq_url) as b:
        await b.declare(topic, "g")
        sent = await b.publish(topic, b"poison")
        async with b.subscribe(topic, group="g") as sub:
            msg = await sub.get(timeout=WAIT)
            await msg.dead_letter("test")
        async with b.dead_letters(topic, group="g") as dead:
            dl = await dead.get(timeout=WAIT)
            await dl.ack()
    assert (dl.id, dl.body) == (sent, b"poison")


async def test_two_consumers_share_an_unordered_group(rabbitmq_url: str) -> None:
    topic, total = name(), 400
    counts: Counter[int] = Counter()
    all_done = asyncio.Event()
    async with polybus.connect(rabbitmq_url) as one, polybus.connect(rabbitmq_url) as two:
        await one.declare(topic, "g")
        workers = [polybus.Worker(b, handle_signals=False) for b in (one, two)]
        for index, worker in enumerate(workers):

            @worker.handler(topic, group="g", max_in_flight=16)
            async def handle(msg: polybus.Message, index: int = index) -> None:
                await asyncio.sleep(0.01)
                counts[index] += 1
                if sum(counts.values()) >= total:
                    all_done.set()

        running = [asyncio.create_task(w.run()) for w in workers]
        try:
            for worker in workers:
                await asyncio.wait_for(worker.wait_ready(), WAIT)
            await one.publish_many(topic, [f"m{i}" for i in range(total)])
            await asyncio.wait_for(all_done.wait(), 60)
        finally:
            for worker in workers:
                await worker.stop()
            await asyncio.gather(*running)
    assert sum(counts.values()) == total
    assert min(counts[0], counts[1]) >= total // 4, f"shares: {dict(counts)}"


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_key_ordered_group_has_one_active_consumer(
    rabbitmq_url: str, queue_type: str
) -> None:
    topic = name()
    async with (
        polybus.connect(rabbitmq_url, queue_type=queue_type) as one,
        polybus.connect(rabbitmq_url, queue_type=queue_type) as two,
    ):
        await one.declare(topic, "g", ordering="key")
        active = one.subscribe(topic, group="g", ordering="key", max_in_flight=8)
        standby = two.subscribe(topic, group="g", ordering="key", max_in_flight=8)
        await active.open()
        await standby.open()
        ids = await one.publish_many(
            topic, [polybus.Outgoing(f"{i}".encode(), key="k") for i in range(6)]
        )
        first = await active.get(timeout=WAIT)
        await first.ack()
        second = await active.get(timeout=WAIT)  # held unsettled
        with pytest.raises(TimeoutError):
            await standby.get(timeout=1.0)  # it only stands by
        await active.close()  # the unsettled rest goes back, in order, to the other one
        rest = []
        for _ in range(5):
            msg = await standby.get(timeout=WAIT)
            rest.append(msg.id)
            await msg.ack()
        await standby.close()
    assert [first.id, second.id] == ids[:2]
    assert rest == ids[1:]


async def test_keyed_nack_is_redelivered_before_later_messages(bus: polybus.Bus) -> None:
    topic = name()
    await bus.declare(topic, "g", ordering="key")
    await bus.publish_many(
        topic, [polybus.Outgoing(b"1", key="k"), polybus.Outgoing(b"2", key="k")]
    )
    async with bus.subscribe(topic, group="g", max_in_flight=4, ordering="key") as sub:
        first = await sub.get(timeout=WAIT)
        await first.nack(delay=0.2)
        again = await sub.get(timeout=WAIT)
        assert (again.body, again.delivery_attempt) == (b"1", 2)
        await again.ack()
        second = await sub.get(timeout=WAIT)
        assert second.body == b"2"
        await second.ack()


# -- settlement -------------------------------------------------------------------------


async def _held(sub: polybus.Subscription, count: int) -> list[polybus.Message]:
    out: list[polybus.Message] = []
    while len(out) < count:
        out.append(await sub.get(timeout=WAIT))
    return out


@pytest.mark.parametrize(
    ("acked", "back"),
    [
        ((0, 1, 2), (3, 4)),  # the oldest three: one basic.ack(multiple)
        ((4,), (0, 1, 2, 3)),  # not the oldest: multiple would ack 0..3 too
        ((1, 3), (0, 2, 4)),
        ((0, 1, 3), (2, 4)),  # a multiple part and a single one
    ],
)
async def test_ack_many_acks_exactly_the_batch(
    rabbitmq_url: str, acked: tuple[int, ...], back: tuple[int, ...]
) -> None:
    topic = name()
    async with polybus.connect(rabbitmq_url) as b:
        await b.declare(topic, "g")
        ids = await b.publish_many(topic, [f"m{i}" for i in range(5)])
        async with b.subscribe(topic, group="g", max_in_flight=5) as sub:
            held = {m.id: m for m in await _held(sub, 5)}
            await sub.ack_many([held[ids[i]] for i in acked])
        async with b.subscribe(topic, group="g", max_in_flight=5) as sub:
            returned = {m.id for m in await _held(sub, len(back))}
            with pytest.raises(TimeoutError):
                await sub.get(timeout=1.0)
    assert returned == {ids[i] for i in back}


async def test_delayed_nack_waits_in_the_delay_queue(bus: polybus.Bus, native: Native) -> None:
    topic, delay = name(), 1.0
    await bus.declare(topic, "g")
    sent = await bus.publish(topic, b"later", key="k", headers={"x-h": "v"})
    after = await bus.publish(topic, b"meanwhile")
    async with bus.subscribe(topic, group="g", max_in_flight=1) as sub:
        first = await sub.get(timeout=WAIT)
        assert first.id == sent
        nacked_at = time.monotonic()
        await first.nack(delay=delay)
        other = await sub.get(timeout=WAIT)  # nothing waits behind the delayed one
        assert other.id == after
        await other.ack()
        again = await sub.get(timeout=WAIT + delay)
        waited = time.monotonic() - nacked_at
        await again.ack()
    assert waited >= delay
    assert (again.id, again.body, again.key, again.headers) == (sent, b"later", "k", {"x-h": "v"})
    assert again.delivery_attempt == 2
    assert await native.exists(f"{topic}.g.delay")


async def test_classic_queue_counts_a_redelivery(rabbitmq_url: str) -> None:
    topic = name()
    async with polybus.connect(rabbitmq_url, queue_type="classic") as b:
        await b.declare(topic, "g")
        await b.publish(topic, b"x")
        async with b.subscribe(topic, group="g") as sub:
            first = await sub.get(timeout=WAIT)
            await first.nack()
            again = await sub.get(timeout=WAIT)
            await again.ack()
    assert (first.delivery_attempt, again.delivery_attempt) == (1, 2)


# -- lag -------------------------------------------------------------------------------


async def _lag_is(bus: polybus.Bus, topic: str, group: str, expected: int) -> polybus.Lag:
    """The lag once it reads ``expected`` (RabbitMQ counts acks as they arrive), or the
    last one read after WAIT."""
    deadline = time.monotonic() + WAIT
    lag = await bus.lag(topic, group)
    while lag.messages != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        lag = await bus.lag(topic, group)
    return lag


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_lag_is_the_ready_messages(rabbitmq_url: str, queue_type: str) -> None:
    """lag counts ready messages only: deliveries a consumer holds unacked (handed out
    or prefetched) are not in it (documented), and reading it delivers nothing."""
    topic = name()
    async with polybus.connect(rabbitmq_url, queue_type=queue_type) as b:
        await b.declare(topic, "g")
        assert await b.lag(topic, "g") == polybus.Lag(0, None)
        ids = await b.publish_many(topic, [f"m{i}" for i in range(5)])
        assert await _lag_is(b, topic, "g", 5) == polybus.Lag(5, None)
        for _ in range(3):
            assert await b.lag(topic, "g") == polybus.Lag(5, None)
        async with b.subscribe(topic, group="g", max_in_flight=2) as sub:
            held = await _held(sub, 2)
            # two unacked deliveries on the consumer's channel: not ready, not counted
            assert (await _lag_is(b, topic, "g", 3)).messages == 3
            await sub.ack_many(held)
            # the broker pushes the next two (prefetch 2): unacked again, and the
            # figure reads 1 while the group has 3 left
            assert (await _lag_is(b, topic, "g", 1)).messages == 1
        # closing the subscription returns its prefetched deliveries: ready again
        assert (await _lag_is(b, topic, "g", 3)).messages == 3
        async with b.subscribe(topic, group="g", max_in_flight=5) as sub:
            rest = await _held(sub, 3)
            await sub.ack_many(rest)
        assert (await _lag_is(b, topic, "g", 0)).messages == 0
    assert {m.id for m in [*held, *rest]} == set(ids)


async def test_reading_the_lag_counts_no_delivery(bus: polybus.Bus) -> None:
    topic = name()
    await bus.declare(topic, "g")
    ids = await bus.publish_many(topic, ["a", "b", "c"])
    for _ in range(5):
        assert (await _lag_is(bus, topic, "g", 3)).messages == 3
    async with bus.subscribe(topic, group="g", max_in_flight=3) as sub:
        got = await _held(sub, 3)
        await sub.ack_many(got)
    assert {m.id for m in got} == set(ids)
    assert [m.delivery_attempt for m in got] == [1, 1, 1]


async def test_lag_counts_delayed_redeliveries(bus: polybus.Bus) -> None:
    """A message nacked with a delay waits in the group's delay queue (its original is
    acked): it is still the group's backlog, and counted."""
    topic = name()
    await bus.declare(topic, "g")
    await bus.publish_many(topic, [b"later", b"other"])
    async with bus.subscribe(topic, group="g", max_in_flight=1) as sub:
        first = await sub.get(timeout=WAIT)
        await first.nack(delay=30.0)
        other = await sub.get(timeout=WAIT)
        await other.ack()
        assert (await _lag_is(bus, topic, "g", 1)).messages == 1


async def test_lag_of_a_group_that_does_not_exist(bus: polybus.Bus, native: Native) -> None:
    topic = name()
    await bus.declare(topic, "g")
    with pytest.raises(ConfigError) as info:
        await bus.lag(topic, "nope")
    assert info.value.field == "group"
    assert "no group 'nope'" in str(info.value)
    assert not await native.exists(f"{topic}.nope")  # a passive declaration creates nothing
    assert await bus.lag(topic, "g") == polybus.Lag(0, None)  # the adapter goes on


# -- the consumer is one-shot -------------------------------------------------------------


async def test_a_lost_channel_ends_the_consumer(bus: polybus.Bus) -> None:
    topic = name()
    await bus.declare(topic, "g")
    await bus.publish_many(topic, [b"a", b"b"])
    adapter = _adapter(bus)
    consumer = adapter.consumer(GroupSpec(topic, "g", Ordering.NONE), max_in_flight=1)
    assert isinstance(consumer, RabbitMQConsumer)
    await consumer.open()
    try:
        (held,) = await asyncio.wait_for(consumer.receive(5), WAIT)
        assert consumer._chan is not None
        consumer._chan.native.close()  # as a lost connection would close it
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(consumer.receive(5), WAIT)
        with pytest.raises(BrokerUnavailable):
            await consumer.ack([held])
    finally:
        await consumer.close()
    # nothing was lost: both come back to a fresh consumer
    async with bus.subscribe(topic, group="g") as sub:
        bodies = {(await sub.get(timeout=WAIT)).body for _ in range(2)}
    assert bodies == {b"a", b"b"}


async def test_a_deleted_queue_is_declared_again(
    bus: polybus.Bus, native: Native, rabbitmq_url: str
) -> None:
    topic = name()
    await bus.declare(topic, "g")
    async with (
        bus.subscribe(topic, group="g") as sub,
        polybus.connect(rabbitmq_url, on_unroutable="error") as strict,
    ):
        await bus.publish(topic, b"before")
        before = await sub.get(timeout=WAIT)
        await before.ack()
        getting = asyncio.create_task(sub.get(timeout=3 * WAIT))
        await native.delete_queue(f"{topic}.g")  # the broker cancels the consumer
        deadline = time.monotonic() + WAIT
        while True:  # until the core has declared and bound the queue again
            try:
                sent = await strict.publish(topic, b"after")
                break
            except PublishError as exc:  # unroutable: no queue is bound yet
                if exc.retryable:
                    raise
                assert time.monotonic() < deadline, "the group queue was not declared again"
                await asyncio.sleep(0.05)
        after = await getting
        await after.ack()
    assert after.id == sent

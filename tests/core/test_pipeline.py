"""The consumer pipeline on memory://: each guarantee the core owns for every backend.

Cancellation safety, per-key gating with in-place redelivery (``key_locks=false`` makes
memory:// hand out keys like a stream broker, so the core's gate is what keeps order),
dead-lettering at the delivery limit through the one dead-letter path, lease keeping,
replay isolation, closed-bus errors, and supervision through a broker outage.
"""

from __future__ import annotations

import asyncio
import math

import pytest

import polybus
from polybus import headers as h
from polybus.errors import BrokerUnavailable, BusClosed, PublishError
from polybus_memory import MemoryAdapter

from .helpers import QUIET, WAIT, drain, name


def broker_of(bus: polybus.Bus) -> MemoryAdapter:
    assert isinstance(bus.adapter, MemoryAdapter)
    return bus.adapter


# -- cancellation safety -------------------------------------------------------


async def test_a_get_that_times_out_loses_nothing(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g", max_in_flight=2) as sub:
        for _ in range(5):
            with pytest.raises(TimeoutError):
                await sub.get(timeout=0.001)
        sent = await bus.publish_many(topic, [b"1", b"2", b"3"])
        got = await drain(sub, 3)
    assert sorted(m.id for m in got) == sorted(sent)


async def test_a_cancelled_get_leaves_its_messages_for_the_next(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        waiting = asyncio.create_task(sub.get())
        await asyncio.sleep(0)  # the get has started its receive
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        sent = await bus.publish(topic, b"kept")
        msg = await sub.get(timeout=WAIT)
        await msg.ack()
    assert msg.id == sent


# -- per-key gating (the core's, on a broker that does not lock keys) ----------


async def test_the_core_hands_out_one_message_per_key(url: str) -> None:
    topic = name()
    async with (
        polybus.connect(url + "?key_locks=false") as bus,
        bus.subscribe(topic, group="g", ordering="key", max_in_flight=10) as sub,
    ):
        await bus.publish_many(
            topic, [polybus.Outgoing(f"a{i}", key="a") for i in range(3)] + [b"free"]
        )
        first = await sub.get(timeout=WAIT)
        other = await sub.get(timeout=WAIT)
        assert (first.text(), other.text()) == ("a0", "free")
        with pytest.raises(TimeoutError):
            await sub.get(timeout=QUIET)  # a1 waits behind the unsettled a0
        assert sub.unsettled == 4, "held messages count against max_in_flight"
        await first.ack()
        second = await sub.get(timeout=WAIT)
        assert second.text() == "a1"
        await other.ack()
        await second.ack()
        await (await sub.get(timeout=WAIT)).ack()


async def test_a_nacked_keyed_message_is_redelivered_in_place_first(url: str) -> None:
    topic = name()
    async with (
        polybus.connect(url + "?key_locks=false") as bus,
        bus.subscribe(topic, group="g", ordering="key", max_in_flight=10) as sub,
    ):
        await bus.publish_many(topic, [polybus.Outgoing(str(i), key="k") for i in range(3)])
        first = await sub.get(timeout=WAIT)
        loop = asyncio.get_running_loop()
        nacked_at = loop.time()
        await first.nack(delay=0.2)
        again = await sub.get(timeout=WAIT)
        waited = loop.time() - nacked_at
        assert (again.text(), again.delivery_attempt) == ("0", 2)
        assert waited >= 0.2, "a delayed nack is not redelivered early"
        order = [again.text()]
        await again.ack()
        for _ in range(2):
            nxt = await sub.get(timeout=WAIT)
            order.append(nxt.text())
            await nxt.ack()
    assert order == ["0", "1", "2"]


async def test_an_unordered_group_hands_out_a_keys_messages_at_once(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g", max_in_flight=10) as sub:
        await bus.publish_many(topic, [polybus.Outgoing(str(i), key="k") for i in range(3)])
        batch = [await sub.get(timeout=WAIT) for _ in range(3)]
        await sub.ack_many(batch)
    assert [m.text() for m in batch] == ["0", "1", "2"]


async def test_ordering_is_fixed_when_a_group_is_created(bus: polybus.Bus) -> None:
    topic = name()
    await bus.declare(topic, "g", ordering="key")
    other = polybus.connect(bus.url)
    async with other:
        with pytest.raises(polybus.ConfigError) as raised:
            await other.declare(topic, "g", ordering="none")
    assert raised.value.field == "ordering"
    assert "memory" in str(raised.value)


# -- dead-lettering at the limit, through the core's one path -------------------


async def test_a_message_past_max_deliveries_is_dead_lettered_unseen(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g", max_deliveries=2) as sub:
        sent = await bus.publish(topic, b"poison", key="p", headers={"x": "1"})
        for attempt in (1, 2):
            msg = await sub.get(timeout=WAIT)
            assert msg.delivery_attempt == attempt
            await msg.nack()
        with pytest.raises(TimeoutError):
            await sub.get(timeout=QUIET)  # the third delivery is not handed out
        assert sub.unsettled == 0
    async with bus.dead_letters(topic, group="g") as dead:
        copy = await dead.get(timeout=WAIT)
        await copy.ack()
    assert (copy.id, copy.body, copy.key) == (sent, b"poison", "p")
    assert copy.headers[h.DLQ_REASON] == "delivery limit of 2 reached"
    assert copy.headers[h.DLQ_ATTEMPTS] == "2"
    assert copy.headers["x"] == "1"


async def test_the_dead_letter_template_names_the_topic_on_every_path(url: str) -> None:
    topic = name()
    async with polybus.connect(url, dead_letter_topic="dlq-{group}-{topic}") as bus:
        assert bus.dead_letter_topic(topic, "g") == f"dlq-g-{topic}"
        async with bus.subscribe(topic, group="g", max_deliveries=1) as sub:
            await bus.publish(topic, b"limit")
            await (await sub.get(timeout=WAIT)).nack()
            await bus.publish(topic, b"rejected")
            rejected = await sub.get(timeout=WAIT)
            await rejected.dead_letter("bad")
        async with bus.subscribe(f"dlq-g-{topic}", group="polybus-dlq") as raw:
            bodies = sorted([(await raw.get(timeout=WAIT)).body for _ in range(2)])
    assert bodies == [b"limit", b"rejected"]


# -- leases ---------------------------------------------------------------------


async def test_unsettled_messages_keep_their_lease_while_held(url: str) -> None:
    topic = name()
    lease_url = url + "?visibility_timeout=0.2"
    async with (
        polybus.connect(lease_url) as bus,
        bus.subscribe(topic, group="g") as holder,
        bus.subscribe(topic, group="g") as other,
    ):
        sent = await bus.publish(topic, b"slow work")
        msg = await holder.get(timeout=WAIT)
        with pytest.raises(TimeoutError):
            await other.get(timeout=1.0)  # five leases long: renewed all the time
        await msg.ack()
    assert msg.id == sent


async def test_an_unrenewed_lease_gives_the_message_to_another_consumer(url: str) -> None:
    # the adapter's consumer alone, without the core: nobody renews the lease, so the
    # memory broker's visibility timeout is real (the test above can fail)
    topic = name()
    async with (
        polybus.connect(url + "?visibility_timeout=0.2") as bus,
        bus.subscribe(topic, group="g") as other,
    ):
        spec = bus._topology.spec(topic, "g")
        lonely = bus.adapter.consumer(spec, max_in_flight=1)
        await lonely.open()
        sent = await bus.publish(topic, b"abandoned")
        (taken,) = await lonely.receive(1)
        again = await other.get(timeout=WAIT)
        await again.ack()
        await lonely.close()
    assert taken.id == again.id == sent
    assert again.delivery_attempt == 2


# -- replay isolation --------------------------------------------------------------


async def test_a_replay_reaches_only_the_group_whose_dead_letter_it_was(bus: polybus.Bus) -> None:
    topic = name()
    await bus.declare(topic, "fulfilment")
    await bus.declare(topic, "analytics")
    sent = await bus.publish(topic, b"order-7")
    async with bus.subscribe(topic, group="analytics") as analytics:
        await (await analytics.get(timeout=WAIT)).ack()
        async with bus.subscribe(topic, group="fulfilment") as fulfilment:
            await (await fulfilment.get(timeout=WAIT)).dead_letter("out of stock")
            assert await bus.replay_dead_letters(topic, group="fulfilment") == 1
            again = await fulfilment.get(timeout=WAIT)
            await again.ack()
            assert await bus.replay_dead_letters(topic, group="fulfilment") == 0
            with pytest.raises(TimeoutError):
                await fulfilment.get(timeout=QUIET)  # replayed once, not twice
        with pytest.raises(TimeoutError):
            await analytics.get(timeout=QUIET)  # the replay is not analytics' business
        assert analytics.unsettled == 0
    assert again.id == sent
    assert again.headers[h.REPLAY_GROUP] == "fulfilment"


async def test_replay_of_chosen_ids_leaves_the_other_dead_letters(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        ids = await bus.publish_many(topic, [b"a", b"b"])
        for _ in ids:
            await (await sub.get(timeout=WAIT)).dead_letter("bad")
        assert await bus.replay_dead_letters(topic, group="g", ids=[ids[1]]) == 1
        again = await sub.get(timeout=WAIT)
        await again.ack()
    assert again.id == ids[1]
    async with bus.dead_letters(topic, group="g") as dead:
        left = await dead.get(timeout=WAIT)
        await left.ack()
    assert left.id == ids[0]


# -- closed bus, sharing rule --------------------------------------------------------


async def test_every_operation_on_a_closed_bus_raises_bus_closed(url: str) -> None:
    bus = polybus.connect(url)
    with pytest.raises(BusClosed):
        await bus.publish("t", b"never opened")
    async with bus:
        await bus.publish("t", b"fine")
        sub = await bus.subscribe("t", group="g").open()
    assert "closed" in repr(bus)
    with pytest.raises(StopAsyncIteration):
        await sub.__anext__()  # closing the bus closed its subscription
    for call in (
        bus.publish("t", b"x"),
        bus.publish_many("t", [b"x"]),
        bus.declare("t", "g"),
        bus.subscribe("t", group="g").open(),
        bus.replay_dead_letters("t", group="g"),
    ):
        with pytest.raises(BusClosed):
            await call
    with pytest.raises(BusClosed):
        await bus.open()  # a closed bus stays closed


async def test_memory_without_a_name_is_private_to_its_bus() -> None:
    topic = name()
    async with polybus.connect("memory://") as one, polybus.connect("memory://") as two:
        await one.declare(topic, "g")
        await two.declare(topic, "g")
        await one.publish(topic, b"mine")
        async with two.subscribe(topic, group="g") as sub:
            with pytest.raises(TimeoutError):
                await sub.get(timeout=QUIET)


async def test_memory_with_a_name_is_shared_by_every_bus_of_that_name(url: str) -> None:
    topic = name()
    async with polybus.connect(url) as one, polybus.connect(url) as two:
        await two.declare(topic, "g")
        sent = await one.publish(topic, b"shared")
        async with two.subscribe(topic, group="g") as sub:
            msg = await sub.get(timeout=WAIT)
            await msg.ack()
    assert msg.id == sent


# -- supervision --------------------------------------------------------------------


async def test_a_subscription_rides_out_an_outage_shorter_than_reconnect_timeout(
    bus: polybus.Bus,
) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g", reconnect_timeout=30) as sub:
        before = await bus.publish(topic, b"before")
        held = await sub.get(timeout=WAIT)
        broker_of(bus).broker.outage()
        with pytest.raises(PublishError) as refused:
            await bus.publish(topic, b"during")
        assert refused.value.retryable
        with pytest.raises(BrokerUnavailable):
            await held.ack()  # its delivery was lost with the connection
        waiting = asyncio.create_task(sub.get(timeout=WAIT))
        await asyncio.sleep(0.3)
        assert sub.health.state == "reconnecting"
        broker_of(bus).broker.outage(False)
        again = await waiting
        await again.ack()
        assert sub.health.state == "running"
        assert sub.health.reconnects == 1
    assert again.id == held.id == before
    assert again.delivery_attempt == 2


async def test_an_outage_past_reconnect_timeout_is_raised_to_the_caller(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g", reconnect_timeout=0.3) as sub:
        broker_of(bus).broker.outage()
        with pytest.raises(BrokerUnavailable, match="reconnect_timeout"):
            await sub.get(timeout=WAIT)
        broker_of(bus).broker.outage(False)
        sent = await bus.publish(topic, b"back")
        msg = await sub.get(timeout=WAIT)  # the subscription is usable again
        await msg.ack()
    assert msg.id == sent


async def test_a_worker_rides_out_an_outage_and_loses_nothing(bus: polybus.Bus) -> None:
    topic = name()
    done: list[str] = []
    worker = polybus.Worker(bus, polybus.defaults(), handle_signals=False)

    @worker.handler(topic, group="g", max_in_flight=4)
    async def handle(msg: polybus.Message) -> None:
        done.append(msg.id)

    await bus.declare(topic, "g")
    running = asyncio.create_task(worker.run())
    await worker.wait_ready()
    sent = await bus.publish_many(topic, [f"m{i}" for i in range(10)])
    broker_of(bus).broker.outage()
    await asyncio.sleep(0.5)
    assert worker.health()[f"{topic}/g"].state in ("reconnecting", "running")
    assert not running.done(), "an outage must not end the worker"
    broker_of(bus).broker.outage(False)
    sent += await bus.publish_many(topic, [f"n{i}" for i in range(10)])
    async with asyncio.timeout(WAIT):
        while not set(sent) <= set(done):  # noqa: ASYNC110 - plain state written by handlers
            await asyncio.sleep(0.01)
    await worker.stop()
    await running
    assert set(sent) <= set(done)
    assert worker.health()[f"{topic}/g"].state == "closed"


def test_reconnect_timeout_is_checked_at_subscribe(bus: polybus.Bus) -> None:
    with pytest.raises(polybus.ConfigError) as raised:
        bus.subscribe("t", group="g", reconnect_timeout=-1)
    assert raised.value.field == "reconnect_timeout"
    assert bus.subscribe("t", group="g", reconnect_timeout=math.inf).health.state == "starting"


async def test_a_replay_that_fails_again_is_replayed_once_per_call(bus: polybus.Bus) -> None:
    topic = name()
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group="g")
    async def always_bad(msg: polybus.Message) -> None:
        raise polybus.Reject("still bad")

    await bus.declare(topic, "g")
    running = asyncio.create_task(worker.run())
    try:
        await worker.wait_ready()
        sent = await bus.publish(topic, b"hopeless")
        async with bus.dead_letters(topic, group="g") as dead:
            await (await dead.get(timeout=WAIT)).nack()
        async with asyncio.timeout(WAIT):  # it used to replay the new copy for ever
            assert await bus.replay_dead_letters(topic, group="g", idle_timeout=0.5) == 1
        async with bus.dead_letters(topic, group="g") as dead:
            again = await dead.get(timeout=WAIT)
            await again.ack()
    finally:
        await worker.stop()
        await running
    assert again.id == sent
    assert again.headers[h.REPLAY] == "1"

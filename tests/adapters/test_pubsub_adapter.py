"""Pub/Sub adapter behaviour against Google's emulator: topology per ordering and its
conflicts, dead-letter policies (polybus's limit and the broker's backstop), size
limits, leases, nack handling per ordering, foreign messages both ways, sanitised
names, exactly-once subscriptions, and consumers that lose their subscription or the
whole emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pubsub_support as support
import pytest
from google.api_core import exceptions as gexc
from google.pubsub_v1 import types as ps

import polybus
from polybus import Bus, Message, Outgoing
from polybus.errors import ConfigError, MessageTooLarge
from polybus_pubsub import PubSubAdapter

pytestmark = pytest.mark.timeout(120)

IDLE = 15.0


@pytest.fixture(scope="session")
def url(pubsub_url: str) -> str:
    return pubsub_url


def with_options(url: str, **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


@pytest.fixture
async def bus(url: str) -> AsyncIterator[Bus]:
    async with polybus.connect(url) as opened:
        yield opened


def adapter_of(bus: Bus) -> PubSubAdapter:
    adapter = bus.adapter
    assert isinstance(adapter, PubSubAdapter)
    return adapter


async def subscription_of(bus: Bus, topic: str, group: str) -> ps.Subscription:
    adapter = adapter_of(bus)
    return await adapter.clients.subscriber.get_subscription(
        subscription=adapter.paths.subscription(topic, group)
    )


# -- topology -----------------------------------------------------------------------


@pytest.mark.parametrize("ordering", ["none", "key"])
async def test_group_subscription_follows_its_ordering(bus: Bus, ordering: str) -> None:
    topic = support.name(f"topo-{ordering}")
    adapter = adapter_of(bus)
    await bus.declare(topic, "g", ordering=ordering)
    group = await subscription_of(bus, topic, "g")
    dlq = bus.dead_letter_topic(topic, "g")
    assert group.enable_message_ordering is (ordering == "key")
    assert group.topic == adapter.paths.topic(topic)
    assert group.dead_letter_policy.dead_letter_topic == adapter.paths.topic(dlq)
    assert group.dead_letter_policy.max_delivery_attempts == 100
    assert group.ack_deadline_seconds == 10
    # the dead-letter group: unordered, its own backstop parks what it fails 100 times
    reader = await subscription_of(bus, dlq, "polybus-dlq")
    assert reader.topic == adapter.paths.topic(dlq)
    assert not reader.enable_message_ordering
    assert reader.dead_letter_policy.dead_letter_topic == adapter.paths.parked_topic(dlq)
    assert reader.dead_letter_policy.max_delivery_attempts == 100
    parked = await adapter.clients.subscriber.get_subscription(
        subscription=adapter.paths.parked_subscription(dlq)
    )
    assert parked.topic == adapter.paths.parked_topic(dlq)
    assert not parked.dead_letter_policy.dead_letter_topic


async def test_subscribe_with_key_order_declares_an_ordered_group(bus: Bus) -> None:
    topic = support.name("sub-key")
    async with bus.subscribe(topic, group="g", ordering="key"):
        pass
    assert (await subscription_of(bus, topic, "g")).enable_message_ordering


async def test_declare_is_idempotent_and_reconciles_mutable_settings(url: str, bus: Bus) -> None:
    """An existing subscription (here one an older polybus made: policy of 5 attempts,
    ack deadline 10) gets the current policy and the latest declaration's deadline."""
    topic = support.name("reconcile")
    adapter = adapter_of(bus)
    await bus.declare(topic)
    dlq = adapter.paths.topic(bus.dead_letter_topic(topic, "g"))
    await adapter.clients.publisher.create_topic(name=dlq)
    await adapter.clients.subscriber.create_subscription(
        request=ps.Subscription(
            name=adapter.paths.subscription(topic, "g"),
            topic=adapter.paths.topic(topic),
            dead_letter_policy=ps.DeadLetterPolicy(dead_letter_topic=dlq, max_delivery_attempts=5),
        )
    )
    await bus.declare(topic, "g")
    await bus.declare(topic, "g")
    assert (await subscription_of(bus, topic, "g")).dead_letter_policy.max_delivery_attempts == 100
    async with polybus.connect(with_options(url, ack_deadline=30)) as other:
        await other.declare(topic, "g")
    assert (await subscription_of(bus, topic, "g")).ack_deadline_seconds == 30


@pytest.mark.parametrize(("first", "then"), [("key", "none"), ("none", "key")])
async def test_ordering_conflict_names_the_setting_and_the_way_out(
    url: str, bus: Bus, first: str, then: str
) -> None:
    topic = support.name("conflict")
    await bus.declare(topic, "g", ordering=first)
    async with polybus.connect(url) as other:
        with pytest.raises(ConfigError) as declared:
            await other.declare(topic, "g", ordering=then)
        with pytest.raises(ConfigError) as subscribed:
            async with other.subscribe(topic, group="g", ordering=then):
                pass
    for caught in (declared, subscribed):
        assert caught.value.field == "ordering"
        assert f"ordering='{first}'" in caught.value.problem
        assert "new group name" in caught.value.problem
    # the group is untouched and still opens with its own ordering
    assert (await subscription_of(bus, topic, "g")).enable_message_ordering is (first == "key")


async def test_an_ordered_dead_letter_group_of_an_earlier_version_is_read(bus: Bus) -> None:
    """The adapter's former `ordering` setting (on by default) made every subscription
    ordered, dead-letter groups included; polybus chooses their ordering, so an ordered
    one is read as it is instead of refused."""
    topic = support.name("old-dlq")
    adapter = adapter_of(bus)
    dlq = bus.dead_letter_topic(topic, "g")
    await bus.declare(dlq)
    await adapter.clients.subscriber.create_subscription(
        request=ps.Subscription(
            name=adapter.paths.subscription(dlq, "polybus-dlq"),
            topic=adapter.paths.topic(dlq),
            enable_message_ordering=True,
        )
    )
    async with bus.subscribe(topic, group="g") as sub:
        msg_id = await bus.publish(topic, b"bad", key="k")
        msg = await sub.get(timeout=IDLE)
        await msg.dead_letter("broken")
    async with bus.dead_letters(topic, group="g") as dead:
        copy = await dead.get(timeout=IDLE)
        await copy.ack()
    assert copy.id == msg_id
    reader = await subscription_of(bus, dlq, "polybus-dlq")
    assert reader.dead_letter_policy.dead_letter_topic == adapter.paths.parked_topic(dlq)


async def test_sanitised_names_work_end_to_end(bus: Bus) -> None:
    topic = "orders/EU 1:" + support.name("x")
    async with bus.subscribe(topic, group="billing team~1") as sub:
        msg_id = await bus.publish(topic, {"ok": True}, key="cust/1")
        msg = await sub.get(timeout=IDLE)
        await msg.ack()
    assert (msg.id, msg.topic, msg.group, msg.key, msg.json()) == (
        msg_id,
        topic,
        "billing team~1",
        "cust/1",
        {"ok": True},
    )


async def test_short_and_reserved_names_are_valid_ids(bus: Bus) -> None:
    for topic in ("ab", "google" + support.name("g"), "7" + support.name("up")):
        async with bus.subscribe(topic, group="g") as sub:
            msg_id = await bus.publish(topic, b"x")
            msg = await sub.get(timeout=IDLE)
            await msg.ack()
        assert (msg.id, msg.topic) == (msg_id, topic)


# -- dead letters -------------------------------------------------------------------


@pytest.mark.parametrize("ordering", ["none", "key"])
async def test_limit_dead_letters_with_polybus_metadata(bus: Bus, ordering: str) -> None:
    """The core dead-letters at max_deliveries (counted by Pub/Sub, or in place for a
    key-ordered group) and the rest of the key flows on."""
    topic = support.name(f"limit-{ordering}")
    attempts: list[int] = []
    async with bus.subscribe(topic, group="g", max_deliveries=2, ordering=ordering) as sub:
        msg_id = await bus.publish(topic, b"poison", key="k", headers={"tenant": "acme"})
        later = await bus.publish(topic, b"later", key="k")
        acked: list[str] = []
        while len(attempts) < 2 or not acked:
            msg = await sub.get(timeout=IDLE)
            if msg.id == msg_id:
                attempts.append(msg.delivery_attempt)
                await msg.nack()
            else:
                acked.append(msg.id)
                await msg.ack()
        with pytest.raises(TimeoutError):  # attempt 3 is dead-lettered, not handed out
            await sub.get(timeout=3)
    assert attempts == [1, 2]
    assert acked == [later]
    async with bus.dead_letters(topic, group="g") as dead:
        copy = await dead.get(timeout=IDLE)
        await copy.ack()
    assert (copy.id, copy.body, copy.key) == (msg_id, b"poison", "k")
    assert copy.headers["tenant"] == "acme"
    assert copy.headers["polybus-dlq-reason"] == "delivery limit of 2 reached"
    assert copy.headers["polybus-dlq-attempts"] == "2"
    assert copy.headers["polybus-dlq-original-topic"] == topic


async def test_max_deliveries_is_bounded_by_the_policy(bus: Bus) -> None:
    topic = support.name("bound")
    assert bus.capabilities.max_deliveries == 99
    with pytest.raises(ConfigError) as caught:
        bus.subscribe(topic, group="g", max_deliveries=100)
    assert caught.value.field == "max_deliveries"
    async with bus.subscribe(topic, group="g", max_deliveries=99):
        pass


async def test_dead_letter_reader_counts_deliveries(bus: Bus) -> None:
    """The dead-letter group has a policy too, so its nacks are counted natively."""
    topic = support.name("dlq-count")
    async with bus.subscribe(topic, group="g") as sub:
        msg_id = await bus.publish(topic, b"bad")
        msg = await sub.get(timeout=IDLE)
        await msg.dead_letter("broken")
    async with bus.dead_letters(topic, group="g") as dead:
        first = await dead.get(timeout=IDLE)
        await first.nack()
        again = await dead.get(timeout=IDLE)
        await again.ack()
    assert (first.id, first.delivery_attempt) == (msg_id, 1)
    assert (again.id, again.delivery_attempt) == (msg_id, 2)


async def _nack_until_broker_dead_letters(bus: Bus, topic: str, ordering: str) -> None:
    """Without max_deliveries polybus never dead-letters: Pub/Sub's policy (100
    attempts) moves the message itself, keeping its attributes."""
    async with bus.subscribe(topic, group="g", ordering=ordering) as sub:
        msg_id = await bus.publish(topic, b"never-ok", headers={"h": "v"})
        for attempt in range(1, 101):
            msg = await sub.get(timeout=IDLE)
            assert (msg.id, msg.delivery_attempt) == (msg_id, attempt)
            await msg.nack()
        # (the emulator forwards a message when its subscription is pulled again)
        with pytest.raises(TimeoutError):
            await sub.get(timeout=2)
    async with bus.dead_letters(topic, group="g") as dead:
        copy = await dead.get(timeout=IDLE)
        await copy.ack()
    assert (copy.id, copy.body, copy.headers["h"]) == (msg_id, b"never-ok", "v")
    assert copy.headers["CloudPubSubDeadLetterSourceDeliveryCount"] == "100"


async def test_broker_dead_letters_at_its_own_limit(bus: Bus) -> None:
    await _nack_until_broker_dead_letters(bus, support.name("native"), "none")


async def test_broker_dead_letters_on_ordered_subscriptions(
    url: str, bus: Bus, request: pytest.FixtureRequest
) -> None:
    """An unkeyed message of a key-ordered group is nacked to the broker (keyed ones are
    redelivered in place by polybus), so the backstop applies to it too."""
    if support.emulator_host(url) is not None:
        # strict: the check still runs, and a fixed emulator turns this into a failure
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="Pub/Sub emulator defect: on a subscription with message ordering it "
                "never forwards a message to the dead-letter topic at max_delivery_attempts; "
                "the message is neither delivered nor forwarded again",
            )
        )
    await _nack_until_broker_dead_letters(bus, support.name("native-ordered"), "key")


# -- sizes ----------------------------------------------------------------------------


async def test_message_too_large(bus: Bus) -> None:
    topic = support.name("large")
    limit = bus.capabilities.max_message_size
    with pytest.raises(MessageTooLarge):
        await bus.publish(topic, b"x" * (limit + 1))
    # the adapter checks the encoded Pub/Sub message itself too (10 MB with attributes)
    env = bus.envelope(b"x" * 9_999_990, headers={"h": "y" * 100})
    await bus.declare(topic)
    with pytest.raises(MessageTooLarge):
        await bus.adapter.publish(topic, [env])


async def test_largest_message_roundtrip(bus: Bus) -> None:
    topic = support.name("big")
    body = b"z" * (bus.capabilities.max_message_size - 200)
    async with bus.subscribe(topic, group="g") as sub:
        msg_id = await bus.publish(topic, body)
        msg = await sub.get(timeout=IDLE)
        await msg.ack()
    assert (msg.id, msg.body) == (msg_id, body)


# -- ordering, nacks and leases -----------------------------------------------------


async def test_key_ordered_nack_comes_back_before_the_rest_of_its_key(bus: Bus) -> None:
    topic = support.name("keynack")
    async with bus.subscribe(topic, group="g", max_in_flight=10, ordering="key") as sub:
        ids = await bus.publish_many(topic, [Outgoing(f"{i}", key="k") for i in range(3)])
        first = await sub.get(timeout=IDLE)
        assert first.id == ids[0]
        with pytest.raises(TimeoutError):  # the key's next message waits for this one
            await sub.get(timeout=1)
        await first.nack()
        seen: list[tuple[str, int]] = []
        while len(seen) < 3:
            msg = await sub.get(timeout=IDLE)
            seen.append((msg.id, msg.delivery_attempt))
            await msg.ack()
    assert seen == [(ids[0], 2), (ids[1], 1), (ids[2], 1)]


async def test_unordered_group_hands_out_a_key_concurrently(bus: Bus) -> None:
    topic = support.name("nokey")
    async with bus.subscribe(topic, group="g", max_in_flight=10) as sub:
        ids = await bus.publish_many(topic, [Outgoing(f"{i}", key="k") for i in range(3)])
        held = [await sub.get(timeout=IDLE) for _ in ids]  # none settled yet
        for msg in held:
            await msg.ack()
    assert sorted(m.id for m in held) == sorted(ids)


async def test_unordered_nack_with_delay(bus: Bus) -> None:
    topic = support.name("delay")
    async with bus.subscribe(topic, group="g") as sub:
        msg_id = await bus.publish(topic, b"later")
        first = await sub.get(timeout=IDLE)
        started = time.monotonic()
        await first.nack(delay=1.5)
        again = await sub.get(timeout=IDLE)
        waited = time.monotonic() - started
        await again.ack()
    assert (again.id, again.delivery_attempt) == (msg_id, 2)
    assert waited >= 1.5


async def test_lease_is_extended_for_slow_handlers(url: str, bus: Bus) -> None:
    """A message held past the 10 s ack deadline does not go to a competing consumer."""
    topic = support.name("lease")
    async with (
        polybus.connect(url) as other,
        bus.subscribe(topic, group="g") as slow,
        other.subscribe(topic, group="g") as competitor,
    ):
        msg_id = await bus.publish(topic, b"slow")
        held = await slow.get(timeout=IDLE)
        assert held.id == msg_id
        with pytest.raises(TimeoutError):
            await competitor.get(timeout=14)  # past the 10 s ack deadline
        await held.ack()


async def test_close_gives_unsettled_messages_back_at_once(url: str) -> None:
    """Released on close, not at the (here 60 s) ack deadline."""
    async with polybus.connect(with_options(url, ack_deadline=60)) as bus:
        topic = support.name("release")
        await bus.declare(topic, "g")
        ids = await bus.publish_many(topic, [b"a", b"b", b"c"])
        async with bus.subscribe(topic, group="g") as sub:
            held = [await sub.get(timeout=IDLE) for _ in ids]
        started = time.monotonic()
        async with bus.subscribe(topic, group="g") as sub:
            back = [await sub.get(timeout=IDLE) for _ in ids]
            for msg in back:
                await msg.ack()
    assert sorted(m.id for m in held) == sorted(m.id for m in back) == sorted(ids)
    assert all(m.delivery_attempt == 2 for m in back)
    assert time.monotonic() - started < 30


# -- foreign messages -------------------------------------------------------------------


async def test_foreign_messages_get_pubsub_ids(url: str, bus: Bus) -> None:
    """A message from a plain client: id = Pub/Sub's message_id (two messages, two ids;
    a redelivery keeps it), body byte-exact, attributes as headers, the ordering key as
    key, delivery_attempt from Pub/Sub."""
    topic = support.name("foreign")
    adapter = adapter_of(bus)
    await bus.declare(topic, "g")
    body = b"\x00\xffsame body"
    async with support.native(url) as native:
        response = await native.publisher.publish(
            topic=adapter.paths.topic(topic),
            messages=[
                ps.PubsubMessage(data=body, attributes={"x-a": "1"}, ordering_key="k1"),
                ps.PubsubMessage(data=body, attributes={"x-a": "1"}),
            ],
        )
    async with bus.subscribe(topic, group="g") as sub:
        got = [await sub.get(timeout=IDLE) for _ in range(2)]
        nacked = next(m for m in got if m.key == "k1")
        await nacked.nack()
        again = await sub.get(timeout=IDLE)
        for msg in (*got, again):
            if msg is not nacked:
                await msg.ack()
    assert sorted(m.id for m in got) == sorted(response.message_ids)
    assert len({m.id for m in got}) == 2
    assert (again.id, again.delivery_attempt) == (nacked.id, 2)
    for msg in got:
        assert (msg.body, msg.headers, msg.delivery_attempt) == (body, {"x-a": "1"}, 1)
        assert msg.content_type is None
        assert msg.published_at is not None
    assert {m.key for m in got} == {"k1", None}


async def test_polybus_messages_read_natively(url: str, bus: Bus) -> None:
    """A plain client of the group's subscription reads bytes as-is, JSON as plain JSON
    text, headers as attributes and the key as the ordering key."""
    topic = support.name("native-read")
    adapter = adapter_of(bus)
    await bus.declare(topic, "g")
    raw_id = await bus.publish(topic, b"\x00raw", key="k", headers={"tenant": "acme"})
    json_id = await bus.publish(topic, {"n": 1})
    async with support.native(url) as native:
        path = adapter.paths.subscription(topic, "g")
        received: list[ps.ReceivedMessage] = []
        while len(received) < 2:
            response = await native.subscriber.pull(subscription=path, max_messages=2, timeout=10)
            received += response.received_messages
        await native.subscriber.acknowledge(subscription=path, ack_ids=[r.ack_id for r in received])
    by_id = {r.message.attributes["polybus-id"]: r.message for r in received}
    raw, doc = by_id[raw_id], by_id[json_id]
    assert (raw.data, raw.ordering_key, raw.attributes["tenant"]) == (b"\x00raw", "k", "acme")
    assert json.loads(doc.data) == {"n": 1}
    assert doc.attributes["polybus-content-type"] == "application/json"
    assert doc.ordering_key == ""


# -- outages ------------------------------------------------------------------------


async def test_lag_knows_no_figure_and_delivers_nothing(bus: Bus) -> None:
    """The Pub/Sub API reports no backlog: lag is Lag(None, None) for a group that
    exists, ConfigError for one that does not, and reading it takes no message."""
    topic = support.name("lag")
    assert not bus.capabilities.lag_messages
    assert not bus.capabilities.lag_seconds
    await bus.declare(topic, "g")
    ids = await bus.publish_many(topic, ["a", "b", "c"])
    for _ in range(3):
        assert await bus.lag(topic, "g") == polybus.Lag(None, None)
    assert await bus.dead_letter_lag(topic, "g") == polybus.Lag(None, None)
    with pytest.raises(ConfigError) as caught:
        await bus.lag(topic, "nope")
    assert caught.value.field == "group"
    assert "no group 'nope'" in str(caught.value)
    async with bus.subscribe(topic, group="g", max_in_flight=3) as sub:
        got = [await sub.get(timeout=IDLE) for _ in range(3)]
        await sub.ack_many(got)
    assert {m.id for m in got} == set(ids)
    assert [m.delivery_attempt for m in got] == [1, 1, 1]


async def test_a_deleted_subscription_is_declared_again(url: str, bus: Bus) -> None:
    """NotFound from a pull is BrokerUnavailable: the core opens a fresh consumer and
    declares the group again, so a running subscription carries on."""
    topic = support.name("gone")
    adapter = adapter_of(bus)
    path = adapter.paths.subscription(topic, "g")
    async with bus.subscribe(topic, group="g") as sub:
        first = await bus.publish(topic, b"1")
        msg = await sub.get(timeout=IDLE)
        await msg.ack()
        await adapter.clients.subscriber.delete_subscription(subscription=path)
        receiving = asyncio.ensure_future(sub.get(timeout=IDLE * 2))

        async def declared_again() -> bool:
            try:
                await adapter.clients.subscriber.get_subscription(subscription=path)
            except gexc.NotFound:
                return False
            return True

        await support.eventually(declared_again, IDLE, "the group was declared again")
        second = await bus.publish(topic, b"2")
        again = await receiving
        await again.ack()
    assert (msg.id, again.id) == (first, second)
    assert sub.health.reconnects >= 1


async def test_worker_rides_out_an_emulator_outage(tmp_path: Path) -> None:
    """An outage three times longer than connect_timeout neither ends the Worker nor
    its subscription; once the (empty) emulator is back the group is declared again and
    new messages are handled."""
    topic = support.name("outage")
    async with support.private_emulator(tmp_path) as emulator:
        url = with_options(emulator.url, connect_timeout=1)
        async with polybus.connect(url) as bus:
            handled: list[str] = []
            worker = polybus.Worker(bus, handle_signals=False)

            @worker.handler(topic, group="g")
            async def handle(msg: Message) -> None:
                handled.append(msg.id)

            running = asyncio.create_task(worker.run())
            try:
                await asyncio.wait_for(worker.wait_ready(), IDLE)
                first = await bus.publish(topic, b"before")

                async def handled_first() -> bool:
                    return first in handled

                await support.eventually(handled_first, IDLE, "the first message was handled")
                await asyncio.to_thread(emulator.stop)

                async def reconnecting() -> bool:
                    return worker.health()[f"{topic}/g"].state == "reconnecting"

                await support.eventually(reconnecting, IDLE, "the route noticed the outage")
                await asyncio.sleep(3)  # the outage itself: 3 x connect_timeout
                assert not running.done()
                await asyncio.to_thread(emulator.start)
                adapter = adapter_of(bus)
                path = adapter.paths.subscription(topic, "g")

                async def declared_again() -> bool:
                    with contextlib.suppress(gexc.GoogleAPICallError):
                        await adapter.clients.subscriber.get_subscription(subscription=path)
                        return True
                    return False

                await support.eventually(declared_again, 60, "the group was declared again")
                second = await bus.publish(topic, b"after")

                async def handled_second() -> bool:
                    return second in handled

                await support.eventually(handled_second, IDLE, "the message after the outage")
                assert not running.done()
                assert worker.health()[f"{topic}/g"].state == "running"
            finally:
                await worker.stop()
                await asyncio.wait_for(running, IDLE)


# -- settings -----------------------------------------------------------------------


async def test_exactly_once_subscription(url: str) -> None:
    async with polybus.connect(with_options(url, exactly_once="true")) as bus:
        topic = support.name("eod")
        async with bus.subscribe(topic, group="g") as sub:
            ids = await bus.publish_many(topic, [b"a", b"b"])
            got = []
            for _ in ids:
                msg = await sub.get(timeout=IDLE)
                await msg.ack()  # confirmed by Pub/Sub before it returns
                got.append(msg.id)
            with pytest.raises(TimeoutError):
                await sub.get(timeout=2)
        sub_info = await subscription_of(bus, topic, "g")
    assert sorted(got) == sorted(ids)
    assert sub_info.enable_exactly_once_delivery


async def test_emulator_host_environment_is_honoured(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "emulator=" not in url:
        pytest.skip("POLYBUS_PUBSUB_URL does not name an emulator")
    host = url.split("emulator=", 1)[1].split("&", 1)[0]
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
    async with polybus.connect("pubsub://env-project") as bus:
        topic = support.name("env")
        async with bus.subscribe(topic, group="g") as sub:
            msg_id = await bus.publish(topic, b"via env")
            msg = await sub.get(timeout=IDLE)
            await msg.ack()
    assert msg.id == msg_id


async def test_publish_timeout_comes_from_the_setting(url: str) -> None:
    assert polybus.connect(with_options(url, publish_timeout=7.5)).adapter.publish_timeout == 7.5
    assert polybus.connect(url).adapter.publish_timeout == 60.0


async def test_concurrent_publishes_are_all_confirmed(bus: Bus) -> None:
    topic = support.name("many")
    async with bus.subscribe(topic, group="g", max_in_flight=256) as sub:
        ids = await asyncio.gather(*(bus.publish(topic, f"{i}") for i in range(300)))
        seen: set[str] = set()
        while len(seen) < len(ids):
            msg = await sub.get(timeout=IDLE)
            seen.add(msg.id)
            await msg.ack()
    assert seen == set(ids)

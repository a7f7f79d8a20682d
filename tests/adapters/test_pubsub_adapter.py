"""Pub/Sub adapter behaviour against Google's emulator: topology and its conflicts,
dead-letter policies (polybus's and the broker's own), size limits, leases, nack
handling per key, sanitised names, exactly-once subscriptions."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pubsub_support as support
import pytest

import polybus
from polybus import Bus, Outgoing
from polybus.errors import ConfigError, MessageTooLarge
from polybus.spi import GroupSettings
from polybus_pubsub import PubSubAdapter

pytestmark = pytest.mark.timeout(90)

IDLE = 15.0


@pytest.fixture(scope="session")
def url(pubsub_url: str) -> str:
    return pubsub_url


@pytest.fixture
async def bus(url: str) -> AsyncIterator[Bus]:
    async with polybus.connect(url) as opened:
        yield opened


def adapter_of(bus: Bus) -> PubSubAdapter:
    adapter = bus.adapter
    assert isinstance(adapter, PubSubAdapter)
    return adapter


async def test_groups_get_a_dead_letter_policy_and_dlq_subscription(bus: Bus) -> None:
    topic = support.name("topo")
    adapter = adapter_of(bus)
    await bus.declare(topic, "plain")
    async with bus.subscribe(topic, group="limited", max_deliveries=2):
        pass
    subscriber = adapter.clients.subscriber
    plain = await subscriber.get_subscription(
        subscription=adapter.subscription_path(topic, "plain")
    )
    limited = await subscriber.get_subscription(
        subscription=adapter.subscription_path(topic, "limited")
    )
    dlq = adapter.dead_letter_topic(topic, "limited")
    assert plain.dead_letter_policy.max_delivery_attempts == 100
    assert limited.dead_letter_policy.max_delivery_attempts == 5  # 2 + 1, raised to Pub/Sub's 5
    assert limited.dead_letter_policy.dead_letter_topic == adapter.topic_path(dlq)
    assert limited.enable_message_ordering
    reader = await subscriber.get_subscription(
        subscription=adapter.subscription_path(dlq, "polybus-dlq")
    )
    assert reader.topic == adapter.topic_path(dlq)


async def test_ensure_group_is_idempotent_and_updates_the_limit(bus: Bus) -> None:
    topic = support.name("idem")
    adapter = adapter_of(bus)
    await bus.declare(topic)
    await adapter.ensure_group(topic, "g", GroupSettings(max_deliveries=10))
    await adapter.ensure_group(topic, "g", GroupSettings(max_deliveries=10))
    await adapter.ensure_group(topic, "g", GroupSettings(max_deliveries=20))
    sub = await adapter.clients.subscriber.get_subscription(
        subscription=adapter.subscription_path(topic, "g")
    )
    assert sub.dead_letter_policy.max_delivery_attempts == 21


async def test_ordering_conflict_names_the_setting(url: str, bus: Bus) -> None:
    topic = support.name("conflict")
    await bus.declare(topic, "g")
    async with polybus.connect(url, ordering=False) as unordered:
        with pytest.raises(ConfigError) as caught:
            await unordered.declare(topic, "g")
    assert caught.value.field == "ordering"


async def test_limit_dead_letters_with_polybus_metadata(bus: Bus) -> None:
    topic = support.name("limit")
    async with bus.subscribe(topic, group="g", max_deliveries=2) as sub:
        msg_id = await bus.publish(topic, b"poison", key="k", headers={"tenant": "acme"})
        for attempt in (1, 2):
            msg = await sub.get(timeout=IDLE)
            assert (msg.id, msg.delivery_attempt) == (msg_id, attempt)
            await msg.nack()
        with pytest.raises(TimeoutError):
            await sub.get(timeout=2)  # attempt 3 is dead-lettered, not handed out
    async with bus.dead_letters(topic, group="g") as dead:
        copy = await dead.get(timeout=IDLE)
        await copy.ack()
    assert (copy.id, copy.body, copy.key) == (msg_id, b"poison", "k")
    assert copy.headers["tenant"] == "acme"
    assert copy.headers["polybus-dlq-reason"] == "delivery limit of 2 reached"
    assert copy.headers["polybus-dlq-attempts"] == "2"
    assert copy.headers["polybus-dlq-original-topic"] == topic


async def _nack_until_broker_dead_letters(bus: Bus, topic: str) -> None:
    async with bus.subscribe(topic, group="g", max_deliveries=1000) as sub:
        msg_id = await bus.publish(topic, b"never-ok")
        for attempt in range(1, 101):
            msg = await sub.get(timeout=IDLE)
            assert (msg.id, msg.delivery_attempt) == (msg_id, attempt)
            await msg.nack()
        with pytest.raises(TimeoutError):
            await sub.get(timeout=2)
    async with bus.dead_letters(topic, group="g") as dead:
        copy = await dead.get(timeout=IDLE)
        await copy.ack()
    assert (copy.id, copy.body) == (msg_id, b"never-ok")


def _is_emulator(url: str) -> bool:
    return "emulator=" in url or bool(os.environ.get("PUBSUB_EMULATOR_HOST"))


async def test_broker_dead_letters_at_its_own_limit(url: str) -> None:
    """Above Pub/Sub's range (100) the broker's policy moves the message itself."""
    async with polybus.connect(url, ordering=False) as bus:
        await _nack_until_broker_dead_letters(bus, support.name("native"))


async def test_broker_dead_letters_on_ordered_subscriptions(
    url: str, bus: Bus, request: pytest.FixtureRequest
) -> None:
    if _is_emulator(url):
        # strict: the check still runs, and a fixed emulator turns this into a failure
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="Pub/Sub emulator defect: on a subscription with message ordering it "
                "never forwards a message to the dead-letter topic at max_delivery_attempts; "
                "the message is neither delivered nor forwarded again",
            )
        )
    await _nack_until_broker_dead_letters(bus, support.name("native-ordered"))


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


async def test_nack_gives_back_later_messages_of_the_key(bus: Bus) -> None:
    topic = support.name("keynack")
    async with bus.subscribe(topic, group="g", max_in_flight=10) as sub:
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
    assert seen[0] == (ids[0], 2)
    assert [i for i, _ in seen] == ids


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


async def test_sanitised_names_work_end_to_end(bus: Bus) -> None:
    topic = "orders/EU 1:" + support.name("x")
    async with bus.subscribe(topic, group="billing team") as sub:
        msg_id = await bus.publish(topic, {"ok": True}, key="cust/1")
        msg = await sub.get(timeout=IDLE)
        await msg.ack()
    assert (msg.id, msg.topic, msg.group, msg.key, msg.json()) == (
        msg_id,
        topic,
        "billing team",
        "cust/1",
        {"ok": True},
    )


async def test_exactly_once_subscription(url: str) -> None:
    sep = "&" if "?" in url else "?"
    async with polybus.connect(f"{url}{sep}exactly_once=true") as bus:
        topic = support.name("eod")
        adapter = adapter_of(bus)
        async with bus.subscribe(topic, group="g") as sub:
            ids = await bus.publish_many(topic, [b"a", b"b"])
            got = []
            for _ in ids:
                msg = await sub.get(timeout=IDLE)
                await msg.ack()  # confirmed by Pub/Sub before it returns
                got.append(msg.id)
            with pytest.raises(TimeoutError):
                await sub.get(timeout=2)
        sub_info = await adapter.clients.subscriber.get_subscription(
            subscription=adapter.subscription_path(topic, "g")
        )
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

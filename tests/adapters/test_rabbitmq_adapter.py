"""RabbitMQ adapter behaviour on the real broker (the ``rabbitmq_url`` fixture)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import pytest

import polybus
from polybus.errors import BrokerUnavailable, ConfigError, PublishError


@pytest.fixture
async def bus(rabbitmq_url: str) -> AsyncIterator[polybus.Bus]:
    async with polybus.connect(rabbitmq_url) as b:
        yield b


def _name() -> str:
    return f"pb-adapter-{uuid.uuid4().hex[:8]}"


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


def test_secrets_never_shown() -> None:
    b = polybus.connect("amqp://alice:s3cr3t-pw@127.0.0.1:5672/vh", options={"heartbeat": 5})
    assert "s3cr3t-pw" not in repr(b)
    assert "s3cr3t-pw" not in repr(b.adapter.settings)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as info:
        polybus.connect("amqp://127.0.0.1/", options={"sasl_password": "x1-hidden"})
    assert "x1-hidden" not in str(info.value)


def test_capabilities_follow_the_ordering_choice() -> None:
    sac = polybus.connect("amqp://127.0.0.1/").capabilities
    shared = polybus.connect("amqp://127.0.0.1/?single_active_consumer=false").capabilities
    assert sac.ordering is polybus.Ordering.PER_KEY
    assert not sac.competing_consumers
    assert shared.competing_consumers
    assert shared.ordering is polybus.Ordering.PER_QUEUE_SINGLE_CONSUMER


async def test_unreachable_broker_is_reported_without_secret() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = polybus.connect(f"amqp://bob:pw-hidden-9@127.0.0.1:{port}/?connect_timeout=2")
    with pytest.raises(BrokerUnavailable) as info:
        await b.open()
    assert "pw-hidden-9" not in str(info.value)


async def test_conflicting_exchange_is_a_config_error(bus: polybus.Bus) -> None:
    topic = _name()
    chan = await bus.adapter.link.channel()  # type: ignore[attr-defined]
    await chan.call(
        lambda cb: chan.native.exchange_declare(topic, exchange_type="direct", callback=cb)
    )
    await chan.close()
    with pytest.raises(ConfigError) as info:
        await bus.declare(topic)
    assert "PRECONDITION_FAILED" in str(info.value)
    # only a throw-away channel died: the bus still works
    other = _name()
    await bus.declare(other, "g")
    await bus.publish(other, b"still fine")


async def test_conflicting_queue_type_is_a_config_error(
    bus: polybus.Bus, rabbitmq_url: str
) -> None:
    topic = _name()
    await bus.declare(topic, "g")
    classic = polybus.connect(rabbitmq_url, queue_type="classic")
    async with classic:
        with pytest.raises(ConfigError) as info:
            await classic.declare(topic, "g")
    assert info.value.field == "group"


async def test_unroutable_error_mode(rabbitmq_url: str) -> None:
    topic = _name()
    async with polybus.connect(rabbitmq_url, on_unroutable="error") as strict:
        msg_id = "unroutable-1"
        with pytest.raises(PublishError) as info:
            await strict.publish(topic, b"to nobody", id=msg_id)
        assert info.value.failed_ids == (msg_id,)
        assert not info.value.retryable
        await strict.declare(topic, "g")
        await strict.publish(topic, b"to the group")


async def test_keyed_nack_is_redelivered_before_later_messages(bus: polybus.Bus) -> None:
    topic = _name()
    await bus.declare(topic, "g")
    await bus.publish_many(
        topic, [polybus.Outgoing(b"1", key="k"), polybus.Outgoing(b"2", key="k")]
    )
    async with bus.subscribe(topic, group="g", max_in_flight=4) as sub:
        first = await sub.get(timeout=10)
        await first.nack(delay=0.2)
        again = await sub.get(timeout=10)
        assert (again.body, again.delivery_attempt) == (b"1", 2)
        await again.ack()
        second = await sub.get(timeout=10)
        assert second.body == b"2"
        await second.ack()

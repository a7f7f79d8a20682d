"""Network faults between the SQS adapter and a real server, through a TCP fault proxy:
connection cuts (resets, refused connections) and stalls (nothing arrives, nothing
fails). Every failure is BrokerUnavailable (or a retryable PublishError), within the
configured timeouts, and a subscription rides the outage out."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import pytest
import sqs_support as support
from botocore.exceptions import ConnectionClosedError

import polybus
from polybus.errors import BrokerUnavailable, PublishError
from polybus.spi import GroupSpec
from polybus_conformance.waiting import wait_for
from polybus_sqs import SQSConsumer

pytestmark = pytest.mark.timeout(120)

IDLE = 15.0
SLACK = 3.0
"""Seconds of scheduling slack on a loaded machine (a bound, not a speed assertion)."""


@pytest.fixture(scope="session")
def url(sqs_url: str) -> str:
    # short timeouts so that each bound is a few seconds
    return support.with_options(sqs_url, fifo="false", connect_timeout=2, wait_time_seconds=1)


async def _open_consumer(bus: polybus.Bus, topic: str, group: str) -> SQSConsumer:
    await bus.declare(topic, group)
    consumer = bus.adapter.consumer(GroupSpec(topic, group), max_in_flight=5)
    assert isinstance(consumer, SQSConsumer)
    await consumer.open()
    return consumer


async def test_a_cut_connection_is_broker_unavailable_from_receive(url: str) -> None:
    topic, group = support.name("cut"), support.name("g")
    with support.proxied(url) as (through, proxy):
        async with polybus.connect(through) as bus:
            consumer = await _open_consumer(bus, topic, group)
            try:
                proxy.cut()
                started = time.monotonic()
                with pytest.raises(BrokerUnavailable) as caught:
                    await asyncio.wait_for(consumer.receive(5), 30)
                assert time.monotonic() - started < 2 * (1 + 2) + 1 + SLACK
                assert "receive from queue" in str(caught.value)
            finally:
                proxy.restore()
                await consumer.close()


async def test_a_stalled_receive_fails_within_its_read_timeout(url: str) -> None:
    """wait_time_seconds + connect_timeout per attempt, two attempts: never the 60 s of
    botocore's default read timeout."""
    topic, group = support.name("stall"), support.name("g")
    with support.proxied(url) as (through, proxy):
        async with polybus.connect(through) as bus:
            consumer = await _open_consumer(bus, topic, group)
            try:
                proxy.stall()
                started = time.monotonic()
                with pytest.raises(BrokerUnavailable):
                    await asyncio.wait_for(consumer.receive(5), 40)
                # and botocore's backoff between the two attempts (at most 1 s)
                assert time.monotonic() - started < 2 * (1 + 2) + 1 + SLACK
            finally:
                proxy.restore()
                await consumer.close()


async def test_other_calls_on_a_stalled_network_fail_within_a_few_connect_timeouts(
    url: str,
) -> None:
    topic, group = support.name("stall2"), support.name("g")
    with support.proxied(url) as (through, proxy):
        async with polybus.connect(through) as bus:
            proxy.stall()
            try:
                started = time.monotonic()
                with pytest.raises(BrokerUnavailable):
                    await asyncio.wait_for(bus.declare(topic, group), 40)
                # three attempts of connect_timeout each, and botocore's backoff
                # between them (at most 1 s, then 2 s)
                assert time.monotonic() - started < 3 * 2 + 3 + SLACK
            finally:
                proxy.restore()


async def test_a_stalled_publish_fails_within_publish_timeout_naming_its_ids(url: str) -> None:
    topic, group = support.name("pubstall"), support.name("g")
    slow_calls = support.with_options(url, connect_timeout=10, publish_timeout=2)
    with support.proxied(slow_calls) as (through, proxy):
        async with polybus.connect(through) as bus:
            assert bus.adapter.publish_timeout == 2
            await bus.declare(topic, group)
            proxy.stall()
            try:
                started = time.monotonic()
                with pytest.raises(PublishError) as caught:
                    await bus.publish_many(topic, [b"a", b"b"])
                assert time.monotonic() - started < 2 + 1
            finally:
                proxy.restore()
    assert caught.value.retryable
    assert len(caught.value.failed_ids) == 2
    assert "publish_timeout" in str(caught.value)


async def test_close_on_a_stalled_network_is_bounded(url: str) -> None:
    topic, group = support.name("closestall"), support.name("g")
    with support.proxied(url) as (through, proxy):
        async with polybus.connect(through) as bus:
            consumer = await _open_consumer(bus, topic, group)
            receiving = asyncio.create_task(consumer.receive(5))
            await asyncio.sleep(0.2)
            proxy.stall()
            receiving.cancel()
            started = time.monotonic()
            try:
                await consumer.close()
            finally:
                proxy.restore()
            # the poll in flight: wait_time_seconds + 2 s at most; nothing to release
            assert time.monotonic() - started < 1 + 2 + SLACK
            await asyncio.gather(receiving, return_exceptions=True)


async def test_a_subscription_rides_out_a_cut_and_loses_nothing(url: str) -> None:
    topic, group = support.name("rideout"), support.name("g")
    with support.proxied(url) as (through, proxy):
        async with polybus.connect(url) as producer, polybus.connect(through) as consumer:
            await producer.declare(topic, group)
            sub = consumer.subscribe(topic, group=group, reconnect_timeout=math.inf)
            async with sub:
                first = await producer.publish(topic, b"before")
                assert (await sub.get(timeout=IDLE)).id == first
                proxy.cut()
                during = await producer.publish_many(topic, [f"during-{i}" for i in range(5)])
                getting = asyncio.create_task(sub.get())
                await wait_for(
                    lambda: sub.health.state == "reconnecting", within=30, what="the outage"
                )
                assert not getting.done()
                proxy.restore()
                got = [await asyncio.wait_for(getting, 30)]
                while {m.id for m in got} < set(during):
                    got.append(await sub.get(timeout=IDLE))
                for msg in got:
                    await msg.ack()
                assert sub.health.state == "running"
                assert sub.health.reconnects >= 1


@pytest.mark.parametrize("fifo", [True, False], ids=["fifo", "standard"])
async def test_a_receive_retried_after_a_lost_answer_asks_for_the_same_messages(
    url: str, fifo: bool
) -> None:
    """FIFO: botocore's retry of a receive carries the same ReceiveRequestAttemptId, so
    SQS answers it with the messages the lost answer held instead of locking their
    message groups for a visibility timeout (moto ignores the id; AWS honours it)."""
    mode = support.with_options(url, fifo=str(fifo).lower())
    topic, group = support.name("attempt"), support.name("g")
    bodies: list[bytes] = []

    def lose_the_first(request: Any, **_: Any) -> None:
        bodies.append(bytes(request.body))
        if len(bodies) == 1:  # as a connection reset before the answer arrives
            raise ConnectionClosedError(endpoint_url=request.url)

    async with polybus.connect(mode) as bus:
        consumer = await _open_consumer(bus, topic, group)
        events = bus.adapter.clients._poll.meta.events  # type: ignore[attr-defined]
        events.register("before-send.sqs.ReceiveMessage", lose_the_first)
        try:
            msg_id = await bus.publish(topic, b"once")
            got = await asyncio.wait_for(consumer.receive(5), IDLE)
        finally:
            events.unregister("before-send.sqs.ReceiveMessage", lose_the_first)
            await consumer.close()
    assert [m.id for m in got] == [msg_id]
    attempts = [json.loads(b).get("ReceiveRequestAttemptId") for b in bodies[:2]]
    if fifo:
        assert attempts[0] is not None
        assert attempts == [attempts[0], attempts[0]]
    else:
        assert attempts == [None, None]

"""Catalogue 12: dead-lettering after the delivery limit, without stopping the stream."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import polybus
from polybus import Message, Outgoing, headers
from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.waiting import consume_concurrently, eventually, next_message

pytestmark = pytest.mark.asyncio

LIMIT = 3


class Poison(Exception):
    """The handler's failure for the poison message."""


def _reliability_middleware(limit: int) -> list[Any]:
    """The shipped reliability middleware (``polybus.defaults(...)``) with a
    delivery limit of ``limit`` and short retry waits."""
    defaults = getattr(polybus, "defaults", None)
    if defaults is None:
        pytest.fail("polybus.defaults (the reliability middleware, issue 3) is missing")
    return list(defaults(max_attempts=limit, initial=0.01, max_delay=0.05))


def _check_dead_letter(
    dead: Message, original: Outgoing, msg_id: str, topic: str, group: str
) -> None:
    assert dead.id == msg_id
    assert dead.body == original.body
    assert dead.key == original.key
    user = {k: v for k, v in dead.headers.items() if not k.startswith("polybus-dlq-")}
    assert user == dict(original.headers or {}), "user headers must be kept byte-exact"
    assert dead.headers.get(headers.DLQ_REASON), "the dead letter must say why"
    assert dead.headers.get(headers.DLQ_ORIGINAL_TOPIC) == topic
    assert dead.headers.get(headers.DLQ_ORIGINAL_GROUP) == group
    assert dead.headers.get(headers.DLQ_ATTEMPTS) == str(LIMIT)


async def test_dead_letter_after_max_deliveries(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """12 dead-letter: after max deliveries the message lands in the DLQ with its metadata,
    and the rest of the stream keeps flowing (Worker + reliability middleware)"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    middleware = _reliability_middleware(LIMIT)
    bus, producer = await polybus_bus_factory(), await polybus_bus_factory()
    await producer.declare(topic, group)
    poison = Outgoing(b"\x00poison\xff", key="poison-key", headers={"x-case": "poison"})
    poison_id = (await producer.publish_many(topic, [poison]))[0]
    good = await producer.publish_many(topic, [f"good-{i}" for i in range(20)])
    calls: Counter[str] = Counter()
    done: set[str] = set()

    worker = polybus.Worker(bus, middleware=middleware, handle_signals=False)

    @worker.handler(topic, group=group, max_in_flight=8)
    async def handle(msg: Message) -> None:
        calls[msg.id] += 1
        if msg.id == poison_id:
            raise Poison("this message can never be processed")
        done.add(msg.id)

    running = asyncio.create_task(worker.run())
    try:
        finished = await eventually(
            lambda: done >= set(good) or running.done(), within=profile.redelivery_timeout
        )
        assert not running.done(), "the worker stopped"
        assert finished, "the rest of the stream stalled behind the poison message"
        async with bus.dead_letters(topic, group=group) as dlq:
            dead = await next_message(dlq, profile.redelivery_timeout, "the dead letter")
            await dead.ack()
    finally:
        await worker.stop()
        await running
    _check_dead_letter(dead, poison, poison_id, topic, group)
    assert calls[poison_id] == LIMIT, f"handler ran {calls[poison_id]} times, limit {LIMIT}"
    assert done >= set(good)


async def test_dead_letter_at_delivery_limit(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """12 dead-letter at the limit: a message nacked max_deliveries times moves to the DLQ
    with its metadata, unseen a further time, while the group keeps flowing"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    producer, consumer = await polybus_bus_factory(), await polybus_bus_factory()
    original = Outgoing(b"native-poison", key="np", headers={"x-case": "native"})
    attempts: list[int] = []
    acked: set[str] = set()
    dead: list[Message] = []
    sub = consumer.subscribe(topic, group=group, max_deliveries=LIMIT)
    dlq = consumer.dead_letters(topic, group=group)
    async with sub, dlq:
        poison_id = (await producer.publish_many(topic, [original]))[0]
        good = await producer.publish_many(topic, [f"after-{i}" for i in range(5)])

        async def settle(index: int, msg: Message) -> None:
            if index == 1:  # the dead-letter subscription
                dead.append(msg)
                await msg.ack()
            elif msg.id == poison_id:
                attempts.append(msg.delivery_attempt)
                await msg.nack()
            else:
                acked.add(msg.id)
                await msg.ack()

        # the group keeps being consumed while the dead letter is awaited
        await consume_concurrently(
            [sub, dlq],
            settle,
            lambda: bool(dead) and acked == set(good),
            idle_timeout=profile.redelivery_timeout,
            progress=lambda: (
                f"{len(attempts)} poison deliveries, {len(dead)} dead letters, "
                f"{len(acked)} of {len(good)} others"
            ),
        )
    assert len(dead) == 1
    _check_dead_letter(dead[0], original, poison_id, topic, group)
    assert attempts == list(range(1, LIMIT + 1))

"""Operations tier: messages from and to plain native clients (services in other
languages, legacy producers), through the broker's own client and the documented polybus_names."""

from __future__ import annotations

import asyncio

import pytest

import polybus
from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.markers import NATIVE_CLIENT, needs
from polybus_conformance.native import client
from polybus_conformance.waiting import next_message, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.operations]

HEADERS = {"x-source": "legacy-billing", "x-trace": "abc123"}


@needs(NATIVE_CLIENT)
async def test_ops_foreign_messages_get_distinct_stable_ids(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """36 foreign messages in: a plain native producer's messages (no polybus headers)
    arrive byte-exact with their headers, attempt 1, and ids that are unique per message
    (two identical messages differ) and, where the broker has an identity, stable
    across redeliveries"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    bus = await polybus_bus_factory()
    await bus.declare(topic, group)
    native = client(polybus_target.backend, polybus_target.url)
    body = "the same body twice, €".encode()
    try:
        await native.publish(topic, body, HEADERS, "k1")
        await native.publish(topic, body, HEADERS, "k1")
    finally:
        await native.close()
    async with bus.subscribe(topic, group=group) as sub:
        first = await next_message(sub, profile.idle_timeout, "the first foreign message")
        second = await next_message(sub, profile.idle_timeout, "the second foreign message")
        for msg in (first, second):
            assert msg.body == body
            assert HEADERS.items() <= msg.headers.items(), msg.headers
            assert msg.delivery_attempt == 1
            assert msg.id
        assert first.id != second.id, "two different messages got the same id"
        await second.ack()
        await first.nack()
        again = await next_message(sub, profile.redelivery_timeout, "the nacked foreign message")
        await again.ack()
    assert again.body == body
    assert again.delivery_attempt == 2
    if bus.capabilities.stable_foreign_ids:
        assert again.id == first.id, "a redelivered foreign message changed its id"
    else:
        assert again.id not in (first.id, second.id), "a fresh id per delivery, never shared"


@needs(NATIVE_CLIENT)
async def test_ops_identical_foreign_messages_are_both_processed_with_idempotency(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """37 foreign messages in, with idempotency: two identical foreign messages are two
    messages; the idempotency and poison middleware never take one for the other"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    bus = await polybus_bus_factory()
    await bus.declare(topic, group)
    handled: list[str] = []
    worker = polybus.Worker(
        bus,
        polybus.defaults(idempotency=polybus.stores.MemoryStore()),
        handle_signals=False,
    )

    @worker.handler(topic, group=group)
    async def handle(msg: polybus.Message) -> None:
        handled.append(msg.id)

    running = asyncio.create_task(worker.run())
    native = client(polybus_target.backend, polybus_target.url)
    try:
        await worker.wait_ready()
        for _ in range(2):
            await native.publish(topic, b"order 7 paid", {}, None)
        await wait_for(
            lambda: len(handled) >= 2 or running.done(),
            within=profile.idle_timeout,
            what="both identical foreign messages to be handled",
        )
    finally:
        await native.close()
        await worker.stop()
        await running
    assert len(set(handled)) == 2, handled


@needs(NATIVE_CLIENT)
async def test_ops_native_consumers_read_polybus_messages_plainly(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """38 foreign consumers out: a plain native consumer reads polybus's bodies
    byte-exact (no envelope around bytes, JSON as plain JSON text) and its user headers
    as native headers"""
    topic = polybus_names.topic()
    profile = polybus_target.profile
    bus = await polybus_bus_factory()
    await bus.declare(topic)
    native = client(polybus_target.backend, polybus_target.url)
    reader = await native.reader(topic)
    try:
        await bus.publish(topic, "café bytes".encode(), headers={"tenant": "acme"}, key="k")
        await bus.publish(topic, {"order": 7, "total": 12.5}, headers={"tenant": "acme"})
        await bus.publish(topic, "plain text", headers={"tenant": "acme"})
        got = await reader.read(3, profile.idle_timeout)
    finally:
        await reader.close()
        await native.close()
    bodies = sorted(m.body for m in got)
    assert bodies == sorted(["café bytes".encode(), b'{"order":7,"total":12.5}', b"plain text"])
    for msg in got:
        assert msg.headers.get("tenant") == "acme", msg.headers

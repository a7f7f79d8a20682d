"""Catalogue 20-22, fault tier: a broker restart loses nothing that was confirmed.

Each test runs against the fault tier's own broker (``polybus_restartable_target``), which
``broker.restart()`` stops and starts again on the same port and data directory.

The contract for a broker that goes away under a running client (20-22): the client
either recovers by itself and carries on, or tells its caller with
:class:`polybus.errors.BrokerUnavailable` (a publisher may also get a retryable
:class:`polybus.errors.PublishError`); it never hangs silently, and no confirmed
message is lost either way: whatever the broken client could not deliver, a fresh
client of the same group receives. Duplicates are tolerated (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from polybus import Bus, Message, Subscription
from polybus.errors import BrokerUnavailable, PublishError
from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.markers import NETWORK, needs
from polybus_conformance.waiting import collect_ids, next_message

pytestmark = [pytest.mark.asyncio, pytest.mark.fault]

# which branch of the contract a backend took shows in the log, not in the verdict
log = logging.getLogger("polybus.conformance.fault")


@needs(NETWORK, "persistent")
async def test_fault_confirmed_survive_restart(
    polybus_restartable_target: Target,
    polybus_restartable_bus_factory: BusFactory,
    polybus_names: Names,
) -> None:
    """20 fault, broker restart: confirmed messages survive it and reach an existing group"""
    topic, group = polybus_names.topic(), polybus_names.group()
    creator = await polybus_restartable_bus_factory()
    await creator.declare(topic, group)
    ids = await creator.publish_many(topic, [f"durable-{i}" for i in range(20)])
    await creator.close()  # no client is connected while the broker restarts
    await asyncio.to_thread(polybus_restartable_target.broker.restart)
    consumer = await polybus_restartable_bus_factory()
    async with consumer.subscribe(topic, group=group) as sub:
        received = await collect_ids(
            sub, ids, idle_timeout=polybus_restartable_target.profile.idle_timeout
        )
    assert {m.id for m in received} == set(ids)


@needs(NETWORK, "persistent")
async def test_fault_consumer_survives_crash(
    polybus_restartable_target: Target,
    polybus_restartable_bus_factory: BusFactory,
    polybus_names: Names,
) -> None:
    """21 fault, broker crash (SIGKILL) under a running subscription: it recovers or
    raises BrokerUnavailable, and every confirmed message is delivered"""
    topic, group = polybus_names.topic(), polybus_names.group()
    idle = polybus_restartable_target.profile.idle_timeout
    producer = await polybus_restartable_bus_factory()
    await producer.declare(topic, group)
    before = await producer.publish_many(topic, [f"before-{i}" for i in range(20)])
    tally = _Tally(before)
    consumer = await polybus_restartable_bus_factory()
    sub = consumer.subscribe(topic, group=group, max_in_flight=5)
    await sub.open()
    surfaced: BrokerUnavailable | None = None
    try:
        # half consumed and acked; the rest waits in the broker or in the client's
        # prefetch, unsettled, when the broker dies
        await tally.receive_count(sub, 10, idle)
        await asyncio.to_thread(polybus_restartable_target.broker.restart, hard=True)
        publisher = await polybus_restartable_bus_factory()
        after = await publisher.publish_many(topic, [f"after-{i}" for i in range(10)])
        tally.allow(after)
        try:
            await tally.receive(sub, [*before, *after], idle)
            log.info("%s: the subscription recovered from the crash by itself", topic)
        except BrokerUnavailable as exc:
            surfaced = exc  # told its caller: allowed, if nothing is lost
            log.info("%s: the subscription raised BrokerUnavailable: %s", topic, exc)
    finally:
        with contextlib.suppress(BrokerUnavailable):
            await sub.close()
    if surfaced is not None:
        # whatever the broken subscription did not deliver, a fresh client receives
        fresh = await polybus_restartable_bus_factory()
        async with fresh.subscribe(topic, group=group) as again:
            await tally.receive(again, [*before, *after], idle)
    assert tally.missing([*before, *after]) == set()


@needs(NETWORK, "persistent")
async def test_fault_publisher_survives_restart(
    polybus_restartable_target: Target,
    polybus_restartable_bus_factory: BusFactory,
    polybus_names: Names,
) -> None:
    """22 fault, broker restart under a connected publisher: it publishes again (after
    BrokerUnavailable or a retryable PublishError at most), nothing confirmed is lost"""
    topic, group = polybus_names.topic(), polybus_names.group()
    idle = polybus_restartable_target.profile.idle_timeout
    producer = await polybus_restartable_bus_factory()
    await producer.declare(topic, group)
    confirmed = await producer.publish_many(topic, [f"first-{i}" for i in range(5)])
    await asyncio.to_thread(polybus_restartable_target.broker.restart)
    deadline = time.monotonic() + idle
    for i in range(5):
        confirmed.append(await _publish_until_confirmed(producer, topic, f"then-{i}", deadline))
    consumer = await polybus_restartable_bus_factory()
    async with consumer.subscribe(topic, group=group) as sub:
        received = await collect_ids(sub, confirmed, idle_timeout=idle)
    assert {m.id for m in received} == set(confirmed)


async def _publish_until_confirmed(bus: Bus, topic: str, body: str, deadline: float) -> str:
    """Publish ``body`` with the same id until the broker confirms it. Retrying is what
    a caller does with a retryable error; a hang, a non-retryable error or no success
    by ``deadline`` fails the test."""
    message_id = f"{body}-{time.monotonic_ns()}"
    errors: list[str] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"{topic}: the publisher did not recover; errors: {errors[-3:]}")
        try:
            async with asyncio.timeout(remaining):
                return await bus.publish(topic, body, id=message_id)
        except TimeoutError:
            pytest.fail(f"{topic}: publish hung (no confirmation, no error); errors: {errors}")
        except BrokerUnavailable as exc:
            log.info("%s: publish after the restart raised BrokerUnavailable: %s", topic, exc)
            errors.append(f"BrokerUnavailable: {exc}")
        except PublishError as exc:
            if not exc.retryable:
                raise
            log.info("%s: publish after the restart raised PublishError: %s", topic, exc)
            errors.append(f"PublishError(retryable): {exc}")
        await asyncio.sleep(0.2)  # back off before the retry; the deadline bounds it


class _Tally:
    """Every delivery of a test's messages, by id (at-least-once: duplicates counted)."""

    def __init__(self, allowed: list[str]) -> None:
        self.allowed = set(allowed)
        self.seen: dict[str, int] = {}

    def allow(self, ids: list[str]) -> None:
        self.allowed.update(ids)

    def missing(self, ids: list[str]) -> set[str]:
        return set(ids) - self.seen.keys()

    async def receive(self, sub: Subscription, wanted: list[str], idle: float) -> None:
        """Receive and ack until every id of ``wanted`` has arrived at least once (in
        this call or earlier). Fails on a foreign id or ``idle`` seconds of silence."""
        while self.missing(wanted):
            msg = await next_message(
                sub, idle, f"still missing {len(self.missing(wanted))} of {len(wanted)} ids"
            )
            self._count(sub, msg)
            await msg.ack()

    async def receive_count(self, sub: Subscription, n: int, idle: float) -> None:
        """Receive and ack ``n`` deliveries, whichever they are."""
        for i in range(n):
            msg = await next_message(sub, idle, f"{i} of {n} deliveries arrived")
            self._count(sub, msg)
            await msg.ack()

    def _count(self, sub: Subscription, msg: Message) -> None:
        if msg.id not in self.allowed:
            pytest.fail(f"{sub.topic}/{sub.group}: received unexpected message id {msg.id}")
        self.seen[msg.id] = self.seen.get(msg.id, 0) + 1

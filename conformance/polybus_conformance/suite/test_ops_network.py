"""Operations tier: a Worker and a publisher through a connection cut and a network stall.

Both run through the tier's fault proxy. A *cut* resets every connection and refuses new
ones for a while (a router crash, a firewall reload); a *stall* holds every byte both
ways while the connections stay up (a partition). The contract, the same on every
backend: the Worker is still running afterwards and every message the publisher got a
confirmation for is processed, processing resumes after the network comes back, no
publish call blocks beyond ``publish_timeout``, and duplicates stay bounded.
The publisher retries each message with the same id until it is confirmed, as an
application does with a retryable error.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

import polybus
from polybus import Bus
from polybus.errors import BrokerUnavailable, PublishError
from polybus_conformance.fixtures import BusFactory, Names
from polybus_conformance.markers import NETWORK, needs
from polybus_conformance.operations import Proxied
from polybus_conformance.waiting import wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.operations]

log = logging.getLogger("polybus.conformance.operations")

CUT_SECONDS = 10.0
STALL_SECONDS = 15.0
SLACK = 3.0
"""Seconds a publish call may take beyond ``publish_timeout`` (the core's grace)."""


class _Publisher:
    """Publishes numbered messages until stopped; retries each id until confirmed."""

    def __init__(self, bus: Bus, topic: str) -> None:
        self.bus = bus
        self.topic = topic
        self.confirmed: list[str] = []
        self.errors: Counter[str] = Counter()
        self.slow: list[float] = []
        self.limit = bus.adapter.publish_timeout + SLACK
        self._stop = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        n = 0
        while not self._stop.is_set():
            message_id = f"{self.topic}-{n}"
            while not self._stop.is_set():
                started = loop.time()
                try:
                    await self.bus.publish(self.topic, f"m{n}", id=message_id)
                except (BrokerUnavailable, PublishError) as exc:
                    if isinstance(exc, PublishError) and not exc.retryable:
                        raise
                    self.errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.2)  # back off, then the same id again
                else:
                    self.confirmed.append(message_id)
                    break
                finally:
                    took = loop.time() - started
                    if took > self.limit:
                        self.slow.append(took)
            n += 1
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()


async def _ride_out(
    polybus_proxied: Proxied, factory: BusFactory, polybus_names: Names, fault: str, seconds: float
) -> None:
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_proxied.target.profile
    recovery = profile.idle_timeout + 15
    consumer_bus, publisher_bus = await factory(), await factory()
    await publisher_bus.declare(topic, group)
    processed: Counter[str] = Counter()
    worker = polybus.Worker(consumer_bus, polybus.defaults(), handle_signals=False)

    @worker.handler(topic, group=group, max_in_flight=8)
    async def handle(msg: polybus.Message) -> None:
        processed[msg.id] += 1

    running = asyncio.create_task(worker.run())
    publisher = _Publisher(publisher_bus, topic)
    publishing = asyncio.create_task(publisher.run())
    try:
        await worker.wait_ready()
        await wait_for(lambda: len(publisher.confirmed) >= 10, within=recovery, what="publishing")
        before = len(publisher.confirmed)
        getattr(polybus_proxied.proxy, fault)()
        log.info("%s: %s for %.0fs", topic, fault, seconds)
        # the fault's length is the subject here: no readiness is awaited
        await asyncio.sleep(seconds)
        polybus_proxied.proxy.restore()
        await wait_for(
            lambda: len(publisher.confirmed) >= before + 10,
            within=recovery,
            what=f"confirmed publishes after the {fault}",
        )
        publisher.stop()
        await publishing
        confirmed = set(publisher.confirmed)
        await wait_for(
            lambda: confirmed <= processed.keys() or running.done(),
            within=recovery,
            what=f"{len(confirmed - processed.keys())} confirmed messages to be processed",
        )
        assert not running.done(), f"the worker stopped: {running}"
        health = worker.health()[f"{topic}/{group}"]
        assert health.state == "running", health
    finally:
        publisher.stop()
        if not publishing.done():
            publishing.cancel()
        await worker.stop()
        await asyncio.gather(running, publishing, return_exceptions=True)
    log.info(
        "%s: %d confirmed, publish errors %s, %d duplicate deliveries",
        topic,
        len(confirmed),
        dict(publisher.errors),
        sum(c - 1 for c in processed.values()),
    )
    assert not publisher.slow, f"publish calls blocked beyond publish_timeout: {publisher.slow}"
    assert confirmed - processed.keys() == set()
    duplicates = sum(c - 1 for c in processed.values())
    assert duplicates <= len(confirmed), f"{duplicates} duplicates for {len(confirmed)} messages"


@needs(NETWORK)
async def test_ops_worker_rides_out_a_connection_cut(
    polybus_proxied: Proxied, polybus_proxied_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """30 network cut: every connection reset for 10 s; the Worker keeps running and
    processes every confirmed message, no publish blocks beyond publish_timeout"""
    await _ride_out(polybus_proxied, polybus_proxied_bus_factory, polybus_names, "cut", CUT_SECONDS)


@needs(NETWORK)
async def test_ops_worker_rides_out_a_stall(
    polybus_proxied: Proxied, polybus_proxied_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """31 network stall: every byte held for 15 s, connections kept; the Worker keeps
    running and processes every confirmed message, no publish blocks beyond
    publish_timeout"""
    await _ride_out(
        polybus_proxied, polybus_proxied_bus_factory, polybus_names, "stall", STALL_SECONDS
    )

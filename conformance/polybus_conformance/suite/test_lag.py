"""Catalogue 17: lag and dead-letter depth, read from the broker without disturbing the
group: after N published and K consumed, the backlog is N - K and the oldest unsettled
message's age is at least the time since it was published."""

from __future__ import annotations

import asyncio
import time

import pytest

from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.markers import needs
from polybus_conformance.waiting import collect

pytestmark = pytest.mark.asyncio

PUBLISHED = 10
CONSUMED = 4


@needs("lag_messages")
async def test_lag_counts_what_the_group_has_not_settled(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """17 lag: 10 published, 4 of them consumed and acked: the group's backlog is 6, and
    reading it changes nothing (the next consumer gets all 6, on their first delivery)"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    bus = await polybus_bus_factory()
    await bus.declare(topic, group)
    # the consumed ones first, all of them, so that no consumer has ever been handed (or
    # prefetched) one of the rest: their first delivery must then be attempt 1
    ids = await bus.publish_many(topic, [f"m{i}" for i in range(CONSUMED)])
    async with bus.subscribe(topic, group=group, max_in_flight=1) as sub:
        done = await collect(sub, CONSUMED, idle_timeout=profile.idle_timeout)
    ids += await bus.publish_many(topic, [f"m{i}" for i in range(CONSUMED, PUBLISHED)])
    left = PUBLISHED - CONSUMED
    # brokers update their counters asynchronously (SQS's are approximate): a deadline
    deadline = time.monotonic() + profile.idle_timeout
    lag = await bus.lag(topic, group)
    while lag.messages != left and time.monotonic() < deadline:
        await asyncio.sleep(0.2)  # the broker's counters follow the acks
        lag = await bus.lag(topic, group)
    assert lag.messages == left, f"backlog {lag.messages}, expected {left}"
    async with bus.subscribe(topic, group=group) as sub:
        rest = await collect(sub, left, idle_timeout=profile.idle_timeout)
    assert {m.id for m in [*done, *rest]} == set(ids)
    assert [m.delivery_attempt for m in rest] == [1] * left, "reading the lag delivered them"


@needs("lag_seconds")
async def test_lag_tells_the_age_of_the_oldest_unsettled_message(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """17 lag in seconds: the age reported is at least the time since the oldest message
    the group has not settled was published"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    bus = await polybus_bus_factory()
    await bus.declare(topic, group)
    published = time.time()
    await bus.publish_many(topic, [f"m{i}" for i in range(3)])
    await asyncio.sleep(1.0)  # the age to be measured: the subject of the test
    deadline = time.monotonic() + profile.idle_timeout
    lag = await bus.lag(topic, group)
    while lag.oldest_age is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        lag = await bus.lag(topic, group)
    assert lag.oldest_age is not None
    assert lag.oldest_age >= time.time() - published - 1.0 >= 0, lag
    assert lag.oldest_age < 3600, f"an implausible age: {lag}"


@needs("lag_messages")
async def test_dead_letter_depth(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """17 dead-letter depth: two messages dead-lettered by a group are its dead-letter
    backlog"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    bus = await polybus_bus_factory()
    await bus.declare(topic, group)
    await bus.publish_many(topic, [b"bad-1", b"bad-2"])
    async with bus.subscribe(topic, group=group) as sub:
        for _ in range(2):
            msg = await sub.get(timeout=profile.idle_timeout)
            await msg.dead_letter("cannot be processed")
    deadline = time.monotonic() + profile.idle_timeout
    depth = await bus.dead_letter_lag(topic, group)
    while depth.messages != 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        depth = await bus.dead_letter_lag(topic, group)
    assert depth.messages == 2, depth

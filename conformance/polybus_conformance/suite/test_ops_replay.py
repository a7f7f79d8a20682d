"""Operations tier: replaying one group's dead letters reaches that group only."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import polybus
from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.waiting import next_message, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.operations]


@pytest.mark.parametrize("idempotency", [False, True], ids=["plain", "idempotent"])
async def test_ops_replay_reaches_only_its_group(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names, idempotency: bool
) -> None:
    """39 replay isolation: a dead letter of one group, replayed, is processed by that
    group only (with or without idempotency), and replaying twice does not double it"""
    topic = polybus_names.topic()
    profile = polybus_target.profile
    bus = await polybus_bus_factory()
    for group in ("fulfilment", "analytics"):
        await bus.declare(topic, group)
    counts: dict[str, Counter[str]] = {"fulfilment": Counter(), "analytics": Counter()}
    reject_first = {"armed": True}
    middleware: list[Any] = polybus.defaults(
        idempotency=polybus.stores.MemoryStore() if idempotency else None
    )
    worker = polybus.Worker(bus, middleware, handle_signals=False)

    @worker.handler(topic, group="fulfilment")
    async def fulfil(msg: polybus.Message) -> None:
        if reject_first["armed"]:
            reject_first["armed"] = False
            raise polybus.Reject("out of stock")
        counts["fulfilment"][msg.id] += 1

    @worker.handler(topic, group="analytics")
    async def analyse(msg: polybus.Message) -> None:
        counts["analytics"][msg.id] += 1

    running = asyncio.create_task(worker.run())
    try:
        await worker.wait_ready()
        sent = await bus.publish(topic, {"order": 7, "total": 40})
        await wait_for(
            lambda: counts["analytics"][sent] == 1, within=profile.idle_timeout, what="analytics"
        )
        dlq = await polybus_bus_factory()
        async with dlq.dead_letters(topic, group="fulfilment") as dead:
            copy = await next_message(dead, profile.idle_timeout, "the dead letter")
            await copy.nack()  # left for the replay
        for attempt in (1, 2):
            replayed = await bus.replay_dead_letters(
                topic, group="fulfilment", idle_timeout=profile.quiet
            )
            assert replayed == (1 if attempt == 1 else 0)
        await wait_for(
            lambda: counts["fulfilment"][sent] >= 1,
            within=profile.idle_timeout,
            what="the replayed order to be fulfilled",
        )
        # watching for a replay that must not reach analytics: absence is the subject
        await asyncio.sleep(profile.quiet)
    finally:
        await worker.stop()
        await running
    assert counts["fulfilment"][sent] == 1
    assert counts["analytics"][sent] == 1, "the replay reached another group"

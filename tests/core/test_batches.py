"""Batch consumption: Subscription.get_many and Subscription.ack_many."""

from __future__ import annotations

import asyncio

import pytest

import polybus
import polybus.sync
from polybus.errors import ConfigError, SettlementError

from .helpers import QUIET, WAIT, name


async def test_get_many_returns_what_is_ready_up_to_the_limit(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g", max_in_flight=50) as sub:
        sent = await bus.publish_many(topic, [str(i) for i in range(10)])
        got: list[polybus.Message] = []
        while len(got) < 10:
            batch = await sub.get_many(4, timeout=WAIT)
            assert 1 <= len(batch) <= 4
            got.extend(batch)
            await sub.ack_many(batch)
    assert [m.id for m in got] == sent
    assert all(m.settlement == "ack" for m in got)


async def test_get_many_stays_within_max_in_flight(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g", max_in_flight=3) as sub:
        await bus.publish_many(topic, [b"x"] * 8)
        first = await sub.get_many(timeout=WAIT)
        assert len(first) <= 3
        while sub.unsettled < 3:  # the other slots fill from later fetches
            first.extend(await sub.get_many(timeout=WAIT))
        assert len(first) == 3
        with pytest.raises(TimeoutError):  # every slot taken: nothing more comes
            await sub.get_many(timeout=QUIET)
        await sub.ack_many(first[:1])
        more = await sub.get_many(timeout=WAIT)
        assert len(more) == 1
        await sub.ack_many(first[1:] + more)
        assert sub.unsettled == 0


async def test_acked_batch_is_not_delivered_again(url: str) -> None:
    topic = name()
    async with polybus.connect(url) as bus:
        await bus.declare(topic, "g")
        await bus.publish_many(topic, [b"a", b"b", b"c"])
        async with bus.subscribe(topic, group="g") as sub:
            got: list[polybus.Message] = []
            while len(got) < 3:
                got.extend(await sub.get_many(timeout=WAIT))
            await sub.ack_many(got[:2])
        async with bus.subscribe(topic, group="g") as again:
            back = await again.get_many(timeout=WAIT)
            await again.ack_many(back)
            with pytest.raises(TimeoutError):
                await again.get_many(timeout=QUIET)
    assert [m.body for m in back] == [b"c"]
    assert back[0].delivery_attempt == 2


async def test_ack_many_refuses_a_bad_batch_and_settles_nothing(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub, bus.subscribe(topic, group="h") as other:
        await bus.publish_many(topic, [b"1", b"2"])
        mine: list[polybus.Message] = []
        while len(mine) < 2:
            mine.extend(await sub.get_many(timeout=WAIT))
        foreign = await other.get(timeout=WAIT)
        with pytest.raises(SettlementError, match="not delivered by this subscription"):
            await sub.ack_many([mine[0], foreign])
        with pytest.raises(SettlementError, match="twice"):
            await sub.ack_many([mine[0], mine[0]])
        await mine[1].ack()
        with pytest.raises(SettlementError, match="already settled"):
            await sub.ack_many(mine)
        assert mine[0].settlement is None
        assert foreign.settlement is None
        assert sub.unsettled == 1
        await sub.ack_many([mine[0]])
        await foreign.ack()
        await sub.ack_many([])  # nothing to do
        assert sub.unsettled == 0


async def test_get_many_checks_its_limit_and_times_out(bus: polybus.Bus) -> None:
    async with bus.subscribe(name(), group="g") as sub:
        with pytest.raises(ConfigError, match="max_messages"):
            await sub.get_many(0)
        with pytest.raises(TimeoutError):
            await sub.get_many(timeout=QUIET)


async def test_at_most_once_batches_arrive_acked(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g", delivery="at_most_once") as sub:
        await bus.publish_many(topic, [b"1", b"2", b"3"])
        got: list[polybus.Message] = []
        while len(got) < 3:
            got.extend(await sub.get_many(timeout=WAIT))
        assert [m.settlement for m in got] == ["ack"] * 3
        assert sub.unsettled == 0


async def test_ack_many_on_a_closed_subscription_is_refused(bus: polybus.Bus) -> None:
    topic = name()
    sub = await bus.subscribe(topic, group="g").open()
    await bus.publish(topic, b"x")
    batch = await sub.get_many(timeout=WAIT)
    await sub.close()
    with pytest.raises(SettlementError, match="closed"):
        await sub.ack_many(batch)


def test_sync_batches(url: str) -> None:
    topic = name()
    with polybus.sync.connect(url) as bus, bus.subscribe(topic, group="g") as sub:
        bus.publish_many(topic, [b"a", b"b"])
        got: list[polybus.sync.SyncMessage] = []
        while len(got) < 2:
            got.extend(sub.get_many(timeout=WAIT))
        sub.ack_many(got)
        assert [m.body for m in got] == [b"a", b"b"]
        assert [m.settlement for m in got] == ["ack", "ack"]


async def test_get_many_wakes_when_a_message_arrives(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        waiting = asyncio.create_task(sub.get_many(timeout=WAIT))
        await bus.publish(topic, b"late")
        batch = await waiting
        await sub.ack_many(batch)
    assert [m.body for m in batch] == [b"late"]

"""Fan-out across groups, competing consumers within a group, per-key order."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import polybus

from .helpers import WAIT, drain, name


async def test_every_group_gets_every_message(bus: polybus.Bus) -> None:
    topic = name()
    async with (
        bus.subscribe(topic, group="fulfilment") as fulfilment,
        bus.subscribe(topic, group="analytics") as analytics,
    ):
        ids = await bus.publish_many(topic, [{"n": i} for i in range(50)])
        got_f = await drain(fulfilment, 50)
        got_a = await drain(analytics, 50)
    assert [m.id for m in got_f] == ids
    assert [m.id for m in got_a] == ids
    assert {m.group for m in got_f} == {"fulfilment"}
    assert {m.group for m in got_a} == {"analytics"}


async def test_group_receives_messages_published_while_no_consumer_runs(
    bus: polybus.Bus,
) -> None:
    topic = name()
    await bus.declare(topic, "late")
    ids = await bus.publish_many(topic, [b"a", b"b"])
    async with bus.subscribe(topic, group="late") as sub:
        got = await drain(sub, 2)
    assert [m.id for m in got] == ids


async def test_competing_consumers_share_without_loss_or_duplicates(bus: polybus.Bus) -> None:
    topic, total = name(), 300
    received: dict[str, list[str]] = defaultdict(list)
    async with (
        bus.subscribe(topic, group="workers", max_in_flight=8) as one,
        bus.subscribe(topic, group="workers", max_in_flight=8) as two,
    ):
        ids = await bus.publish_many(topic, [str(i) for i in range(total)])
        done = asyncio.Event()

        async def consume(label: str, sub: polybus.Subscription) -> None:
            while not done.is_set():
                try:
                    msg = await sub.get(timeout=0.2)
                except TimeoutError:
                    continue
                received[label].append(msg.id)
                await msg.ack()
                if sum(map(len, received.values())) >= total:
                    done.set()
                await asyncio.sleep(0)  # let the other consumer take its turn

        async with asyncio.timeout(WAIT):
            await asyncio.gather(consume("one", one), consume("two", two))
    everything = received["one"] + received["two"]
    assert sorted(everything) == sorted(ids)  # none lost, none twice
    assert received["one"]  # both consumers took part
    assert received["two"]


async def test_per_key_order_with_three_consumers(bus: polybus.Bus) -> None:
    topic, keys, per_key = name(), ["a", "b", "c", "d"], 25
    batch = [polybus.Outgoing({"key": k, "seq": s}, key=k) for s in range(per_key) for k in keys]
    seen: dict[str, list[int]] = defaultdict(list)
    by_consumer: dict[int, int] = defaultdict(int)
    subs = [bus.subscribe(topic, group="ordered", max_in_flight=4) for _ in range(3)]
    for sub in subs:
        await sub.open()
    try:
        await bus.publish_many(topic, batch)
        total = len(batch)

        async def consume(index: int, sub: polybus.Subscription) -> None:
            while sum(map(len, seen.values())) < total:
                try:
                    msg = await sub.get(timeout=0.2)
                except TimeoutError:
                    continue
                body = msg.json()
                seen[body["key"]].append(body["seq"])
                by_consumer[index] += 1
                await asyncio.sleep(0)  # hold the message across a switch
                await msg.ack()

        async with asyncio.timeout(WAIT):
            await asyncio.gather(*(consume(i, s) for i, s in enumerate(subs)))
    finally:
        for sub in subs:
            await sub.close()
    assert {k: seen[k] for k in keys} == {k: list(range(per_key)) for k in keys}
    assert len(by_consumer) == 3  # all three consumers received messages

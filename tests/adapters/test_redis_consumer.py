"""Redis Streams consumers against a real redis-server: competing consumers, nack and
nack(delay) (kept by the broker, across a close), leases (renewal, no stealing back),
close, reclaim after a consumer process is killed, stale consumer names, a deleted group,
and cancellation (never lost inside redis-py)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis_support as support
from redis_support import raw_fixture  # noqa: F401 (fixtures)

import polybus
from polybus import Bus, Subscription
from polybus.errors import BrokerUnavailable, PolybusError
from polybus.spi import GroupSpec, Message
from polybus_redis import RedisAdapter, RedisConsumer

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def buses(redis_url: str) -> AsyncIterator[list[Bus]]:
    """Open buses a test adds to (``buses.append(await _bus(url))``); all closed after."""
    opened: list[Bus] = []
    yield opened
    for bus in reversed(opened):
        await bus.close()


async def _bus(buses: list[Bus], url: str, **options: Any) -> Bus:
    bus = await polybus.connect(url, **options).open()
    buses.append(bus)
    return bus


def _adapter(bus: Bus) -> RedisAdapter:
    assert isinstance(bus.adapter, RedisAdapter)
    return bus.adapter


async def _consumers(raw: Any, topic: str, group: str) -> dict[str, int]:
    """The group's consumer names and how many entries each holds."""
    found = await raw.xinfo_consumers(f"polybus:{topic}", group)
    return {c["name"].decode(): int(c["pending"]) for c in found}


async def _owner(raw: Any, topic: str, group: str, entry: str) -> str:
    (pending,) = await raw.xpending_range(f"polybus:{topic}", group, entry, entry, 1)
    return str(pending["consumer"].decode())


async def _nothing_for(sub: Subscription, seconds: float) -> None:
    """Fail if a message arrives within ``seconds`` (absence is the subject)."""
    try:
        msg = await sub.get(timeout=seconds)
    except TimeoutError:
        return
    pytest.fail(f"{msg.id} arrived (attempt {msg.delivery_attempt})")


async def test_consumers_of_a_group_compete(redis_url: str, buses: list[Bus]) -> None:
    topic, group = support.name("compete"), support.name("g")
    producer = await _bus(buses, redis_url)
    await producer.declare(topic, group)
    subs = [
        await (await _bus(buses, redis_url)).subscribe(topic, group=group, max_in_flight=4).open()
        for _ in range(3)
    ]
    ids = await producer.publish_many(topic, [f"m{i}" for i in range(60)])
    seen: list[list[str]] = [[], [], []]

    async def drain(index: int) -> None:
        while sum(len(s) for s in seen) < len(ids):
            try:
                msg = await subs[index].get(timeout=0.5)
            except TimeoutError:
                continue
            seen[index].append(msg.id)
            await asyncio.sleep(0.005)  # work: the others take their share meanwhile
            await msg.ack()

    await asyncio.wait_for(asyncio.gather(*(drain(i) for i in range(3))), 30)
    assert sorted(i for part in seen for i in part) == sorted(ids), (
        "each entry goes to exactly one consumer"
    )
    assert all(seen), f"every consumer takes a share: {[len(s) for s in seen]}"


async def test_nack_comes_back_at_once_even_while_a_read_blocks(
    redis_url: str, buses: list[Bus], raw: Any
) -> None:
    """A get waiting in a blocking XREADGROUP (block=5) when a nack comes: CLIENT
    UNBLOCK ends the read, so the nacked entry is back well before the read would end."""
    topic, group = support.name("nack"), support.name("g")
    bus = await _bus(buses, redis_url, block=5)
    await bus.declare(topic, group)
    sent = await bus.publish(topic, b"again")
    async with bus.subscribe(topic, group=group, max_in_flight=5) as sub:
        first = await sub.get(timeout=10)
        waiting = asyncio.create_task(sub.get(timeout=10))

        async def blocked() -> bool:
            clients = await raw.client_list()
            return any("b" in c["flags"] and c["cmd"] == "xreadgroup" for c in clients)

        await support.eventually(blocked, 10, "the waiting get to block in XREADGROUP")
        started = time.monotonic()
        await first.nack()
        again = await waiting
        took = time.monotonic() - started
        await again.ack()
    assert (first.id, first.delivery_attempt) == (sent, 1)
    assert (again.id, again.delivery_attempt) == (sent, 2)
    assert took < 2.0, f"the nacked entry came back after {took:.2f}s"


async def test_a_nack_delay_is_kept_by_the_broker_across_a_close(
    redis_url: str, buses: list[Bus], raw: Any
) -> None:
    topic, group = support.name("delay"), support.name("g")
    first_bus, second_bus = await _bus(buses, redis_url), await _bus(buses, redis_url)
    await first_bus.declare(topic, group)
    sent = await first_bus.publish(topic, b"later")
    async with first_bus.subscribe(topic, group=group) as sub:
        msg = await sub.get(timeout=10)
        nacked = time.monotonic()
        await msg.nack(delay=2.0)
    # the nacking consumer is gone; the entry waits under polybus:returned
    assert await _owner(raw, topic, group, msg.receipt) == "polybus:returned"
    async with second_bus.subscribe(topic, group=group) as other:
        await _nothing_for(other, 1.5)
        again = await other.get(timeout=10)
        returned_after = time.monotonic() - nacked
        await again.ack()
    assert (again.id, again.delivery_attempt) == (sent, 2)
    assert returned_after >= 2.0


async def test_a_longer_delay_is_cut_to_claim_idle(
    redis_url: str, buses: list[Bus], caplog: pytest.LogCaptureFixture
) -> None:
    topic, group = support.name("cap"), support.name("g")
    bus = await _bus(buses, redis_url, claim_idle=1)
    assert bus.capabilities.max_delay == 1
    await bus.declare(topic, group)
    await bus.publish(topic, b"x")
    async with bus.subscribe(topic, group=group) as sub:
        msg = await sub.get(timeout=10)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="polybus.redis"):
            await msg.nack(delay=30)
        again = await sub.get(timeout=10)
        await again.ack()
    assert 1.0 <= time.monotonic() - started < 5
    assert "exceeds claim_idle" in caplog.text


async def test_leases_are_renewed_while_a_handler_works(redis_url: str, buses: list[Bus]) -> None:
    """claim_idle=2: polybus renews every third of it; a second consumer of the group
    gets nothing for twice the lease, and renewals count no delivery."""
    topic, group = support.name("lease"), support.name("g")
    holder_bus = await _bus(buses, redis_url, claim_idle=2, block=0.2)
    other_bus = await _bus(buses, redis_url, claim_idle=2, block=0.2)
    await holder_bus.declare(topic, group)
    sent = await holder_bus.publish(topic, b"slow work")
    holder = await holder_bus.subscribe(topic, group=group).open()
    msg = await holder.get(timeout=10)
    async with other_bus.subscribe(topic, group=group) as other:
        await _nothing_for(other, 4.0)
        await holder.close()  # gives it back: the other consumer claims it
        again = await other.get(timeout=10)
        await again.ack()
    assert msg.id == again.id == sent
    assert again.delivery_attempt == 2


async def test_a_lapsed_lease_is_not_taken_back(redis_url: str, buses: list[Bus], raw: Any) -> None:
    """Without renewals (the SPI used directly), a second consumer reclaims the entry
    after claim_idle (attempt 2); the first one's late extend and nack leave it there."""
    topic, group = support.name("lapse"), support.name("g")
    bus = await _bus(buses, redis_url, claim_idle=1, block=0.1)
    await bus.declare(topic, group)
    sent = await bus.publish(topic, b"x")
    spec = GroupSpec(topic, group)
    first, second = (_adapter(bus).consumer(spec, max_in_flight=1) for _ in range(2))
    assert isinstance(first, RedisConsumer)
    assert isinstance(second, RedisConsumer)
    await first.open()
    await second.open()
    try:
        (mine,) = await first.receive(1)
        await asyncio.sleep(1.2)  # the lease lapses: nothing renews it
        (taken,) = await asyncio.wait_for(second.receive(1), 10)
        assert (mine.id, taken.id) == (sent, sent)
        assert (mine.delivery_attempt, taken.delivery_attempt) == (1, 2)
        await first.extend([mine])
        await first.nack(mine, None)
        assert await _owner(raw, topic, group, taken.receipt) == second.name
        await second.ack([taken])
    finally:
        await first.close()
        await second.close()


async def test_close_gives_back_at_once_and_removes_the_consumer(
    redis_url: str, buses: list[Bus], raw: Any
) -> None:
    topic, group = support.name("close"), support.name("g")
    first_bus, second_bus = await _bus(buses, redis_url), await _bus(buses, redis_url)
    await first_bus.declare(topic, group)
    ids = await first_bus.publish_many(topic, [f"m{i}" for i in range(3)])
    async with first_bus.subscribe(topic, group=group, max_in_flight=3) as sub:
        held = [await sub.get(timeout=10) for _ in ids]
        names = await _consumers(raw, topic, group)
    assert sorted(names.values()) == [3]
    assert await _consumers(raw, topic, group) == {"polybus:returned": 3}
    started = time.monotonic()
    async with second_bus.subscribe(topic, group=group) as other:
        back = [await other.get(timeout=10) for _ in ids]
        await other.ack_many(back)
    # claim_idle is 30 s: they were claimable at once, not after the lease
    assert time.monotonic() - started < 5
    assert sorted(m.id for m in back) == sorted(m.id for m in held) == sorted(ids)
    assert {m.delivery_attempt for m in back} == {2}


async def test_a_killed_consumer_process_entries_come_back_and_its_name_goes(
    redis_url: str, buses: list[Bus], raw: Any
) -> None:
    topic, group = support.name("kill"), support.name("g")
    url = support.with_options(redis_url, {"claim_idle": 1, "block": 0.2})
    bus = await _bus(buses, url)
    await bus.declare(topic, group)
    ids = await bus.publish_many(topic, [f"m{i}" for i in range(3)])
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polybus_conformance._child_consumer",
        url,
        topic,
        group,
        "3",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        held = [(await asyncio.wait_for(child.stdout.readline(), 20)).decode().strip() for _ in ids]
        dead = set(await _consumers(raw, topic, group))
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert sorted(held) == sorted(ids)
    async with bus.subscribe(topic, group=group) as sub:
        back = [await sub.get(timeout=10) for _ in ids]
        await sub.ack_many(back)
    assert sorted(m.id for m in back) == sorted(ids)
    assert {m.delivery_attempt for m in back} == {2}, "the group's counter counts the lost one"

    async def forgotten() -> bool:
        # a consumer opening sweeps names idle for 2 * (claim_idle + block) holding nothing
        async with bus.subscribe(topic, group=group):
            pass
        return not dead & set(await _consumers(raw, topic, group))

    await support.eventually(forgotten, 10, "the dead consumer's name to be deleted")


async def test_a_deleted_group_ends_the_subscription(
    redis_url: str, buses: list[Bus], raw: Any
) -> None:
    topic, group = support.name("gone"), support.name("g")
    bus = await _bus(buses, redis_url, block=0.2)
    await bus.declare(topic, group)
    async with bus.subscribe(topic, group=group) as sub:
        await raw.xgroup_destroy(f"polybus:{topic}", group)
        with pytest.raises(PolybusError) as caught:
            await sub.get(timeout=10)
    assert not isinstance(caught.value, BrokerUnavailable)
    assert "NOGROUP" in str(caught.value)


async def test_cancelling_a_call_is_never_lost(redis_url: str, buses: list[Bus]) -> None:
    """redis-py bounds socket writes with asyncio.wait_for, which on Python 3.11 drops a
    cancellation arriving as the write completes; the adapter sets no socket timeout, so
    a cancelled settle (a closing subscription, a stopping worker) always stops."""
    topic, group = support.name("cancel"), support.name("g")
    bus = await _bus(buses, redis_url)
    await bus.declare(topic, group)
    consumer = _adapter(bus).consumer(GroupSpec(topic, group), max_in_flight=1)
    await consumer.open()
    fake = Message("x", topic, b"", group, receipt="1-1")
    lost = 0
    try:
        for attempt in range(100):

            async def acking() -> None:
                for _ in range(10_000):
                    await consumer.ack([fake])

            task = asyncio.create_task(acking())
            await asyncio.sleep(0.001 * (1 + attempt % 5))
            task.cancel()
            try:
                await task
                lost += 1
            except asyncio.CancelledError:
                pass
    finally:
        await consumer.close()
    assert lost == 0, f"{lost} of 100 cancellations were lost"


async def test_more_concurrent_acks_than_pooled_connections_all_succeed(
    redis_url: str, buses: list[Bus], raw: Any
) -> None:
    """More concurrent commands than the pool has connections wait for one (here 300
    ``ack_many`` calls at once: each is its own XACK). redis-py's own pool refused the
    101st with "Too many connections" (the ack failed as BrokerUnavailable)."""
    bus = await _bus(buses, redis_url)  # default pool: 32 connections
    topic, group = support.name("acks"), support.name("g")
    sub = await bus.subscribe(topic, group=group, max_in_flight=300).open()
    await bus.publish_many(topic, [f"m{i}".encode() for i in range(300)])
    got: list[Message] = []
    while len(got) < 300:
        got += await sub.get_many(300 - len(got), timeout=10)
    await asyncio.gather(*(sub.ack_many([m]) for m in got))
    assert (await raw.xpending(f"polybus:{topic}", group))["pending"] == 0
    await sub.close()


async def test_a_workers_acks_share_xack_commands(
    redis_url: str, buses: list[Bus], raw: Any
) -> None:
    """A Worker's handlers ack one message each; the core sends them in batches, so
    the server sees far fewer XACKs than messages. One XACK per message (as before)
    took a pooled connection each: under load they queued past the pool without bound
    and timed out after publish_timeout (the messages came back)."""
    bus = await _bus(buses, redis_url)
    topic, group, total = support.name("xacks"), support.name("g"), 2000
    await bus.declare(topic, group)
    await bus.publish_many(topic, [f"m{i}".encode() for i in range(total)])
    before = await _xack_calls(raw)
    seen: set[str] = set()
    done = asyncio.Event()
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group=group, max_in_flight=256)
    async def handle(msg: Message) -> None:
        seen.add(msg.id)
        if len(seen) == total:
            done.set()

    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(30):
        await done.wait()
    await worker.stop()
    await task
    assert (await raw.xpending(f"polybus:{topic}", group))["pending"] == 0
    assert await _xack_calls(raw) - before <= total // 10


async def _xack_calls(raw: Any) -> int:
    stats = await raw.info("commandstats")
    return int(stats.get("cmdstat_xack", {}).get("calls", 0))


def test_the_pool_size_is_validated() -> None:
    with pytest.raises(polybus.errors.ConfigError, match="max_connections"):
        polybus.connect("redis://127.0.0.1:6379?max_connections=0")

"""A nats-server restart loses no confirmed message; publisher, subscription and Worker
resume through the core's supervision (the consumer raises BrokerUnavailable while the
connection is down; the core retires it and opens a fresh one once it is back)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats_support as support
import pytest

import polybus
from polybus import Message
from polybus.errors import BrokerUnavailable, PublishError

pytestmark = pytest.mark.timeout(90)


async def _publish_until_confirmed(bus: polybus.Bus, topic: str, body: bytes, msg_id: str) -> None:
    """Retry one publish (same id: the stream deduplicates) until the server is back."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await bus.publish(topic, body, id=msg_id)
            return
        except (PublishError, BrokerUnavailable) as exc:
            if isinstance(exc, PublishError) and not exc.retryable:
                raise
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_restart_loses_no_confirmed_message(tmp_path: Path, kill: bool) -> None:
    topic, group = support.name("restart"), support.name("g")
    with support.private_server(tmp_path) as server:
        # deliveries in flight when the server stops come back after ack_wait
        url = f"{server.url}?request_timeout=2&fetch_expires=1&ack_wait=3"
        async with polybus.connect(url) as bus:
            await bus.declare(topic, group)
            before = await bus.publish_many(topic, [f"b{i}".encode() for i in range(200)])
            received: dict[str, int] = {}
            async with bus.subscribe(topic, group=group, max_in_flight=16) as sub:
                for _ in range(50):  # part of the backlog is consumed before the restart
                    msg = await sub.get(timeout=10)
                    received[msg.id] = received.get(msg.id, 0) + 1
                    await msg.ack()
                held = await sub.get(timeout=10)  # unsettled across the restart
                received[held.id] = received.get(held.id, 0) + 1

                server.stop(kill=kill)
                server.start()

                after = [f"a{i}-{topic}" for i in range(50)]
                for msg_id in after:
                    await _publish_until_confirmed(bus, topic, b"after", msg_id)
                wanted = set(before) | set(after)
                # an ack across a restart is not confirmed: the message may come again
                await held.ack()
                while not wanted <= set(received):
                    msg = await sub.get(timeout=20)
                    received[msg.id] = received.get(msg.id, 0) + 1
                    await msg.ack()
    assert wanted <= set(received), f"lost {len(wanted - set(received))} confirmed messages"


async def test_outage_shows_in_health_and_the_subscription_resumes(tmp_path: Path) -> None:
    topic, group = support.name("health"), support.name("g")
    with support.private_server(tmp_path) as server:
        async with polybus.connect(f"{server.url}?request_timeout=2") as bus:
            await bus.declare(topic, group)
            async with bus.subscribe(topic, group=group) as sub:
                first = await bus.publish(topic, b"before")
                msg = await sub.get(timeout=10)
                await msg.ack()
                assert sub.health.state == "running"
                waiting = asyncio.create_task(sub.get(timeout=40))
                server.stop()
                # the consumer raised BrokerUnavailable: the core reconnects, visibly
                await support.eventually(
                    lambda: _is(sub.health.state == "reconnecting"), 10, "health reconnecting"
                )
                assert not waiting.done()
                server.start()
                later = f"later-{topic}"
                await _publish_until_confirmed(bus, topic, b"after", later)
                back = await waiting
                await back.ack()
                assert sub.health.state == "running"
                assert sub.health.reconnects >= 1
    assert (msg.id, back.id) == (first, later)


async def test_worker_resumes_after_a_restart(tmp_path: Path) -> None:
    topic, group = support.name("worker"), support.name("g")
    with support.private_server(tmp_path) as server:
        async with polybus.connect(f"{server.url}?request_timeout=2&ack_wait=3") as bus:
            await bus.declare(topic, group)
            before = await bus.publish_many(topic, [f"b{i}".encode() for i in range(20)])
            done: set[str] = set()
            worker = polybus.Worker(bus, handle_signals=False)

            @worker.handler(topic, group=group, max_in_flight=4)
            async def handle(msg: Message) -> None:
                done.add(msg.id)

            running = asyncio.create_task(worker.run())
            try:
                await support.eventually(lambda: _is(done >= set(before)), 20, "first batch")
                server.stop(kill=True)
                server.start()
                after = [f"a{i}-{topic}" for i in range(20)]
                for msg_id in after:
                    await _publish_until_confirmed(bus, topic, b"after", msg_id)
                await support.eventually(lambda: _is(done >= set(after)), 30, "second batch")
                assert not running.done(), "the worker stopped"
                assert all(h.healthy for h in worker.health().values())
            finally:
                await worker.stop()
                await running


async def _is(value: bool) -> bool:
    return value

"""A nats-server restart loses no confirmed message; publisher and consumer resume."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats_support as support
import pytest

import polybus
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

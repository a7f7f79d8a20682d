"""A lease left behind by a dead consumer: its twins wait for the lease to expire
instead of burning their deliveries against the poison-pill limit."""

from __future__ import annotations

import asyncio
import contextlib

import polybus
from polybus import Message
from polybus.stores import Claim, MemoryStore

from .helpers import Outcomes, memory_url, running


async def first_run_or_dead_letter(
    bus: polybus.Bus, runs: list[tuple[str, int]], deadline: float = 10.0
) -> list[Message]:
    """Wait until the handler ran or a dead letter appeared; return the dead letters."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    async with bus.dead_letters("orders", group="g") as dead:
        while not runs:
            assert loop.time() < end, f"neither run nor dead-lettered within {deadline}s"
            with contextlib.suppress(TimeoutError):
                msg = await dead.get(timeout=0.02)
                await msg.ack()
                return [msg]
    return []


async def test_a_dead_holders_lease_defers_instead_of_dead_lettering() -> None:
    """The reported bug: lease 60 s, busy_delay 1 s, max_deliveries 10 dead-lettered a
    healthy message after ~10 s. Here at the same ratio (lease 0.5 s, busy_delay
    0.05 s, limit 3): the message must be processed exactly once, never dead-lettered.
    """
    store = MemoryStore()
    runs: list[tuple[str, int]] = []
    outcomes = Outcomes()

    async def handler(msg: Message) -> None:
        runs.append((msg.id, msg.delivery_attempt))

    chain = polybus.defaults(idempotency=store, max_deliveries=3, lease=0.5, busy_delay=0.05)
    async with polybus.connect(memory_url()) as bus:
        await bus.declare("orders", "g")
        sent = await bus.publish("orders", b"healthy", id="order-1")
        # a consumer took the lease on this message, then died without releasing it
        assert await store.claim("ids:orders/g", "order-1", 0.5) is Claim.CLAIMED
        async with running(bus, [outcomes, *chain], handler):
            dead = await first_run_or_dead_letter(bus, runs)
    assert dead == [], [d.headers for d in dead]
    assert [r[0] for r in runs] == [sent]
    # one deferral while the dead lease lasted, then the run: not max_deliveries
    assert runs[0][1] <= 3
    assert outcomes.count("nack") <= 2

"""A lease left behind by a dead consumer: its twins wait for the lease to expire
instead of burning their deliveries against the poison-pill limit."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
from pathlib import Path

import pytest

import polybus
from polybus import Message, Middleware
from polybus import headers as h
from polybus.errors import ConfigError
from polybus.middleware import CircuitBreaker, Idempotency, PoisonGuard, Sequences
from polybus.middleware.idempotency import Strategy
from polybus.stores import Claim, MemoryStore, SQLiteStore

from .helpers import Outcomes, memory_url, running

LOGGER = "polybus.middleware.idempotency"


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


@pytest.mark.parametrize(
    ("strategy", "lease_scope", "lease_key"),
    [
        (None, "ids:orders/g", "order-1"),
        (Sequences(), "seqlease:orders/g", "acct-1#1"),
    ],
)
async def test_a_dead_holders_lease_defers_instead_of_dead_lettering(
    strategy: Strategy | None, lease_scope: str, lease_key: str
) -> None:
    """The reported bug: lease 60 s, busy_delay 1 s, max_deliveries 10 dead-lettered a
    healthy message after ~10 s. Here at the same ratio (lease 0.5 s, busy_delay
    0.05 s, limit 3): the message must be processed exactly once, never dead-lettered.
    """
    store = MemoryStore()
    runs: list[tuple[str, int]] = []
    outcomes = Outcomes()

    async def handler(msg: Message) -> None:
        runs.append((msg.id, msg.delivery_attempt))

    chain = polybus.defaults(
        idempotency=store, max_deliveries=3, lease=0.5, busy_delay=0.05, strategy=strategy
    )
    async with polybus.connect(memory_url()) as bus:
        await bus.declare("orders", "g")
        sent = await bus.publish(
            "orders", b"healthy", id="order-1", key="acct-1", headers={h.SEQUENCE: "1"}
        )
        # a consumer took the lease on this message, then died without releasing it
        assert await store.claim(lease_scope, lease_key, 0.5) is Claim.CLAIMED
        async with running(bus, [outcomes, *chain], handler):
            dead = await first_run_or_dead_letter(bus, runs)
    assert dead == [], [d.headers for d in dead]
    # one deferral, for the dead lease's remaining time, then the run on delivery 2
    # (deterministic: the deferral is at least the remaining lease on memory://'s clock)
    assert runs == [(sent, 2)]
    assert outcomes.count("nack") == 1


async def test_a_deferral_is_not_counted_by_a_store_counting_guard(tmp_path: Path) -> None:
    """The guard counts deliveries in the store (as it does for backends without a
    native count); the deferred delivery is taken back out of that count, even though
    the circuit breaker between them resets the ``deferred`` flag on its way out."""
    db = tmp_path / "store.db"
    store = SQLiteStore(db)
    counts: list[int] = []

    def stored_count(msg_id: str) -> int:
        # the table layout is documented in polybus.stores._sql: one row per counter
        with contextlib.closing(sqlite3.connect(db)) as conn:
            row = conn.execute(
                "SELECT value FROM polybus_store WHERE scope = ? AND key = ? AND state = 'count'",
                ("poison:orders/g", msg_id),
            ).fetchone()
        return int(row[0]) if row else 0

    runs: list[tuple[str, int]] = []

    async def handler(msg: Message) -> None:
        counts.append(stored_count(msg.id))
        runs.append((msg.id, msg.delivery_attempt))

    outcomes = Outcomes()
    chain: list[Middleware] = [
        outcomes,
        PoisonGuard(3, store=store, counting="store"),
        CircuitBreaker(),
        Idempotency(store, lease=0.5, busy_delay=0.05),
    ]
    try:
        async with polybus.connect(memory_url()) as bus:
            await bus.declare("orders", "g")
            sent = await bus.publish("orders", b"healthy", id="order-1")
            assert await store.claim("ids:orders/g", "order-1", 0.5) is Claim.CLAIMED
            async with running(bus, chain, handler):
                dead = await first_run_or_dead_letter(bus, runs)
        assert dead == []
        assert runs == [(sent, 2)]
        assert outcomes.count("nack") == 1  # it was deferred once ...
        assert counts == [1]  # ... and only the delivery that ran is counted
        assert stored_count(sent) == 0  # reset after the success
    finally:
        await store.close()


class LegacyStore:
    """A store written against the original protocol: no ``try_claim``, no ``decr``."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    async def claim(self, scope: str, key: str, lease: float) -> Claim:
        return await self.inner.claim(scope, key, lease)

    async def complete(self, scope: str, key: str, ttl: float | None) -> None:
        await self.inner.complete(scope, key, ttl)

    async def release(self, scope: str, key: str) -> None:
        await self.inner.release(scope, key)

    async def sequence(self, scope: str, entity: str) -> int | None:
        return await self.inner.sequence(scope, entity)

    async def advance(self, scope: str, entity: str, value: int) -> None:
        await self.inner.advance(scope, entity, value)

    async def incr(self, scope: str, key: str, ttl: float) -> int:
        return await self.inner.incr(scope, key, ttl)

    async def reset(self, scope: str, key: str) -> None:
        await self.inner.reset(scope, key)

    async def close(self) -> None:
        await self.inner.close()


async def test_a_store_without_try_claim_defers_for_the_whole_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = LegacyStore()
    runs: list[tuple[str, int]] = []

    async def handler(msg: Message) -> None:
        runs.append((msg.id, msg.delivery_attempt))

    async with polybus.connect(memory_url()) as bus:
        await bus.declare("orders", "g")
        sent = await bus.publish("orders", b"healthy", id="order-1")
        assert await store.claim("ids:orders/g", "order-1", 0.4) is Claim.CLAIMED
        idem = Idempotency(store, lease=0.4, busy_delay=0.05)
        async with running(bus, [PoisonGuard(3), idem], handler):
            dead = await first_run_or_dead_letter(bus, runs)
    assert dead == []
    assert runs == [(sent, 2)]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        "LegacyStore cannot report a lease's remaining time (no try_claim): twins of a "
        "message in progress wait the whole lease=0.4s"
    ]
    assert deferrals(caplog) == [0.4]  # the whole lease (capped there), not busy_delay


def deferrals(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The deferral delays the middleware asked the broker for (from its INFO lines)."""
    return [
        float(r.args[0])  # type: ignore[index,arg-type]
        for r in caplog.records
        if r.name == LOGGER and r.getMessage().startswith("twin in progress, deferred")
    ]


async def test_deferrals_respect_the_backends_max_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backend that bounds nack delays (Pub/Sub 600 s, SQS 12 h) gets at most that;
    the twin is then deferred again until the lease expired."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = MemoryStore()
    runs: list[tuple[str, int]] = []

    async def handler(msg: Message) -> None:
        runs.append((msg.id, msg.delivery_attempt))

    async with polybus.connect(memory_url()) as bus:
        bus.adapter.capabilities = dataclasses.replace(bus.capabilities, max_delay=0.2)
        await bus.declare("orders", "g")
        sent = await bus.publish("orders", b"healthy", id="order-1")
        assert await store.claim("ids:orders/g", "order-1", 0.5) is Claim.CLAIMED
        idem = Idempotency(store, lease=0.5, busy_delay=0.05)
        async with running(bus, [idem], handler):
            dead = await first_run_or_dead_letter(bus, runs)
    assert dead == []
    delays = deferrals(caplog)
    assert len(delays) >= 2  # 0.5 s of lease in steps of at most 0.2 s
    assert all(d <= 0.2 for d in delays), delays
    assert runs == [(sent, len(delays) + 1)]


async def test_without_delayed_redelivery_a_twin_waits_in_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A nack with a delay would come straight back and burn the deliveries: the twin
    waits for the lease in process instead, on its first delivery."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = MemoryStore()
    runs: list[tuple[str, int]] = []
    outcomes = Outcomes()

    async def handler(msg: Message) -> None:
        runs.append((msg.id, msg.delivery_attempt))

    async with polybus.connect(memory_url()) as bus:
        bus.adapter.capabilities = dataclasses.replace(bus.capabilities, delayed_redelivery=False)
        await bus.declare("orders", "g")
        sent = await bus.publish("orders", b"healthy", id="order-1")
        assert await store.claim("ids:orders/g", "order-1", 0.3) is Claim.CLAIMED
        idem = Idempotency(store, lease=0.3, busy_delay=0.05)
        async with running(bus, [outcomes, idem], handler):
            dead = await first_run_or_dead_letter(bus, runs)
    assert dead == []
    assert runs == [(sent, 1)]
    assert outcomes.count("nack") == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "no delayed redelivery" in warned[0]


def test_a_negative_busy_delay_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        Idempotency(MemoryStore(), busy_delay=-1)
    assert info.value.field == "busy_delay"

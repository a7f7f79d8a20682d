"""Store scenarios run for every store (memory and SQLite here, Redis and Postgres on
their real servers): the same assertions for each, never weakened for one."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter

import polybus
from middleware.helpers import Outcomes, memory_url, running, until
from polybus import Message, Outgoing
from polybus.middleware import Idempotency
from polybus.stores import Claim, Store, current_transaction


async def duplicates_processed_once(
    store: Store, *, atomic: bool = False, placeholder: str = "?", table: str = ""
) -> Counter[str]:
    """Publish every id four times in a row (the copies are in flight together) and
    check that each id's handler ran exactly once. Returns the outcome counts."""
    ids = [uuid.uuid4().hex for _ in range(10)]
    copies = 4
    processed: Counter[str] = Counter()
    running_now: set[str] = set()
    overlaps: list[str] = []

    async def handler(msg: Message) -> None:
        if msg.id in running_now:
            overlaps.append(msg.id)
        running_now.add(msg.id)
        processed[msg.id] += 1
        try:
            if atomic:
                tx = current_transaction()
                await tx.execute(f"INSERT INTO {table} (id) VALUES ({placeholder})", (msg.id,))
            await asyncio.sleep(0.01)  # simulated work, so that the twins overlap
        finally:
            running_now.discard(msg.id)

    outcomes = Outcomes()
    # twins are deferred for their holder's remaining lease: a short one keeps the test
    # fast while still far above the 10 ms handler (a twin after it would run again)
    idem = Idempotency(store, lease=1.0, busy_delay=0.02, atomic=atomic)
    async with (
        polybus.connect(memory_url()) as bus,
        running(bus, [outcomes, idem], handler, max_in_flight=16),
    ):
        await bus.publish_many(
            "orders", [Outgoing(b"work", id=i) for i in ids for _ in range(copies)]
        )
        await until(
            lambda: outcomes.count("ack") == len(ids) * copies,
            deadline=30,
            what="every copy acked",
        )
    assert overlaps == []
    assert processed == Counter({i: 1 for i in ids})
    return Counter(o for _, o in outcomes.seen)


async def atomic_failure_leaves_nothing(
    store: Store, *, placeholder: str, effects: str, count_markers: str
) -> None:
    """A handler that fails after writing its effect leaves neither the effect nor the
    marker; the redelivery then commits both; a later duplicate commits nothing."""
    fail_next = True
    runs = 0

    async def handler(msg: Message) -> None:
        nonlocal fail_next, runs
        runs += 1
        tx = current_transaction()
        await tx.execute(f"INSERT INTO {effects} (id) VALUES ({placeholder})", (msg.id,))
        if fail_next:
            fail_next = False
            raise RuntimeError("failed after writing")

    assert hasattr(store, "transaction")
    handle = polybus.chain(handler, [Idempotency(store, atomic=True)])

    async def state(msg_id: str) -> tuple[int, int]:
        async with store.transaction() as tx:
            rows = await tx.execute(
                f"SELECT COUNT(*) FROM {effects} WHERE id = {placeholder}", (msg_id,)
            )
            marks = await tx.execute(count_markers, (f"%{msg_id}",))
        return int(rows[0][0]), int(marks[0][0])

    async with polybus.connect(memory_url()) as bus:
        await bus.declare("orders", "g")
        msg_id = await bus.publish("orders", b"pay 10")
        async with bus.subscribe("orders", group="g") as sub:
            first = await sub.get(timeout=5)
            try:
                await handle(first)
            except RuntimeError:
                pass
            else:
                raise AssertionError("the handler's failure was swallowed")
            assert await state(msg_id) == (0, 0)  # neither effect nor marker
            await first.nack()

            second = await sub.get(timeout=5)
            assert second.delivery_attempt == 2
            await handle(second)
            await second.ack()
            assert await state(msg_id) == (1, 1)

        await bus.publish("orders", b"pay 10", id=msg_id)  # a duplicate
        async with bus.subscribe("orders", group="g") as sub:
            third = await sub.get(timeout=5)
            await handle(third)
            await third.ack()
    assert runs == 2
    assert await state(msg_id) == (1, 1)


async def dead_holder_defers_then_runs(store: Store) -> tuple[int, int]:
    """A consumer died holding the lease on a message: with the recommended chain
    (limit 3 deliveries) the message is deferred until the lease expired, then
    processed exactly once, never dead-lettered. Returns (deliveries, deferrals)."""
    lease = 0.5
    runs: list[int] = []
    outcomes = Outcomes()

    async def handler(msg: Message) -> None:
        runs.append(msg.delivery_attempt)

    msg_id = uuid.uuid4().hex
    chain = polybus.defaults(idempotency=store, max_deliveries=3, lease=lease, busy_delay=0.05)
    async with polybus.connect(memory_url()) as bus:
        await bus.declare("orders", "g")
        await bus.publish("orders", b"healthy", id=msg_id)
        assert await store.claim("ids:orders/g", msg_id, lease) is Claim.CLAIMED
        async with running(bus, [outcomes, *chain], handler):
            await until(
                lambda: outcomes.count("ack") == 1, deadline=10, what="processed after the lease"
            )
        async with bus.dead_letters("orders", group="g") as dead:
            with contextlib.suppress(TimeoutError):
                letter = await dead.get(timeout=0.2)
                raise AssertionError(f"dead-lettered: {letter.headers}")
    assert len(runs) == 1
    return runs[0], outcomes.count("nack")

"""Child process for the crash-loop tests: one run of a worker whose handler kills it.

Usage: python crash_child.py DB_PATH MESSAGE_ID MAX_DELIVERIES MODE

Publishes one message with MESSAGE_ID to a fresh memory:// broker (standing in for a
broker that redelivers after the previous consumer died), then runs a Worker whose
handler prints ``HANDLER id attempt=A call=C`` and SIGKILLs this process. If the poison
guard dead-letters the message instead, prints DEAD-LETTERED with the record's
attempts and reason, and exits 0. MODE picks the chain:

* ``guard``: ``[PoisonGuard(counting="store"), DeadLetter()]``, the guard alone;
* ``chain``: the recommended order ``[PoisonGuard(), DeadLetter(), Retry()]`` with the
  guard on ``counting="auto"`` and the bus declaring ``native_delivery_count=False``,
  as Kafka does: the guard must choose its store by itself. The handler's first call
  in each run raises a transient error, which Retry retries in process; the second
  call kills the process, so Retry's attempt count restarts with every run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys

import polybus
from polybus import Message, Middleware
from polybus import headers as h
from polybus.middleware import Backoff, DeadLetter, PoisonGuard, Retry
from polybus.stores import SQLiteStore


async def main(db: str, message_id: str, limit: int, mode: str) -> int:
    store = SQLiteStore(db)
    chain: list[Middleware]
    if mode == "guard":
        chain = [PoisonGuard(limit, store=store, counting="store"), DeadLetter()]
    else:
        retry = Retry(backoff=Backoff(initial=0.01, max_delay=0.02), inline_max_delay=1.0)
        chain = [PoisonGuard(limit, store=store), DeadLetter(), retry]
    calls = 0
    async with polybus.connect("memory://crash") as bus:
        if mode == "chain":
            bus.adapter.capabilities = dataclasses.replace(
                bus.capabilities, native_delivery_count=False
            )
        worker = polybus.Worker(bus, chain, handle_signals=False)

        @worker.handler("orders", group="g")
        async def handler(msg: Message) -> None:
            nonlocal calls
            calls += 1
            print(f"HANDLER {msg.id} attempt={msg.delivery_attempt} call={calls}", flush=True)
            if mode == "chain" and calls == 1:
                raise ConnectionError("transient: retried in process")
            os.kill(os.getpid(), signal.SIGKILL)

        await bus.declare("orders", "g")
        await bus.publish("orders", b"poison", id=message_id)
        task = asyncio.ensure_future(worker.run())
        async with bus.dead_letters("orders", group="g") as dead:
            msg = await dead.get(timeout=20)
            await msg.ack()
        await worker.stop()
        await task
    await store.close()
    print("DEAD-LETTERED", msg.id, msg.headers[h.DLQ_ATTEMPTS], msg.headers[h.DLQ_REASON])
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])))

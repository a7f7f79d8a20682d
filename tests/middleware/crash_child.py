"""Child process for the crash-loop test: one run of a worker whose handler kills it.

Usage: python crash_child.py DB_PATH MESSAGE_ID MAX_DELIVERIES

Publishes one message with MESSAGE_ID to a fresh memory:// broker (standing in for a
broker that redelivers after the previous consumer died), then runs a Worker with the
store-counting poison guard. The handler prints HANDLER and SIGKILLs this process. If
the guard dead-letters the message instead, prints DEAD-LETTERED and the record's
reason and attempts, and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import polybus
from polybus import Message
from polybus import headers as h
from polybus.middleware import DeadLetter, PoisonGuard
from polybus.stores import SQLiteStore


async def main(db: str, message_id: str, limit: int) -> int:
    store = SQLiteStore(db)
    guard = PoisonGuard(limit, store=store, counting="store")
    async with polybus.connect("memory://crash") as bus:
        worker = polybus.Worker(bus, [guard, DeadLetter()], handle_signals=False)

        @worker.handler("orders", group="g")
        async def handler(msg: Message) -> None:
            print("HANDLER", msg.id, flush=True)
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
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))

"""A worker process for test_sigterm.py: run with ``python sigterm_worker.py COUNT``.

Publishes COUNT messages to memory://, runs a Worker whose handler takes a while, and
prints ``started ID`` as each handler starts. After a SIGTERM stops the worker it reads
back whatever is left in the group and prints one JSON line with what happened.
"""

from __future__ import annotations

import asyncio
import json
import sys

import polybus

TOPIC, GROUP = "jobs", "workers"


async def main(count: int) -> None:
    started: list[str] = []
    finished: list[str] = []
    async with polybus.connect("memory://sigterm") as bus:
        await bus.declare(TOPIC, GROUP)
        published = await bus.publish_many(TOPIC, [str(i).encode() for i in range(count)])
        worker = polybus.Worker(bus, shutdown_timeout=30)

        @worker.handler(TOPIC, group=GROUP, max_in_flight=5)
        async def handle(msg: polybus.Message) -> None:
            started.append(msg.id)
            print("started", msg.id, flush=True)
            await asyncio.sleep(0.3)  # the work in progress that SIGTERM must not cut
            finished.append(msg.id)

        await worker.run()  # returns after SIGTERM, once in-flight handlers settled
        remaining = []
        async with bus.subscribe(TOPIC, group=GROUP, max_in_flight=count) as sub:
            while True:
                try:
                    msg = await sub.get(timeout=0.5)
                except TimeoutError:
                    break
                remaining.append(msg.id)
                await msg.ack()
    report = {"published": published, "started": started, "finished": finished}
    print(json.dumps({**report, "remaining": remaining}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

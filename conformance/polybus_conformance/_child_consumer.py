"""A consumer run as a separate process by the consumer-death test.

``python -m polybus_conformance._child_consumer URL TOPIC GROUP COUNT`` receives COUNT
messages without settling them, prints each id on its own line, then waits to be
killed. It must never ack: the test kills it and expects every message back.
"""

from __future__ import annotations

import asyncio
import sys

import polybus


async def main(url: str, topic: str, group: str, count: int) -> None:
    async with (
        polybus.connect(url) as bus,
        bus.subscribe(topic, group=group, max_in_flight=count) as sub,
    ):
        for _ in range(count):
            msg = await sub.get()
            print(msg.id, flush=True)
        await asyncio.Event().wait()  # hold the messages until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))

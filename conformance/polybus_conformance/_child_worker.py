"""A Worker run as a separate process by the operations tier's scale-out test.

``python -m polybus_conformance._child_worker URL TOPIC GROUP WORK_SECONDS`` serves GROUP
of TOPIC (unordered), spends WORK_SECONDS per message, prints each id once it is
processed, and stops gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys

import polybus


async def main(url: str, topic: str, group: str, work: float) -> None:
    async with polybus.connect(url) as bus:
        worker = polybus.Worker(bus)

        @worker.handler(topic, group=group, max_in_flight=8)
        async def handle(msg: polybus.Message) -> None:
            await asyncio.sleep(work)
            print(msg.id, flush=True)

        await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))

"""What per-key order costs a Worker: the same handler in an unordered and a key-ordered
group, one after the other on one broker.

``python -m polybus.bench.ordering URL [--messages N] [--keys K] [--handler-ms MS]
[--max-in-flight M]`` publishes N messages over K keys (round-robin) to a fresh topic per
mode, runs a Worker whose handler awaits MS milliseconds, and prints messages per second
for ``ordering="none"`` (up to M handlers at once, whatever the key) and
``ordering="key"`` (a key's messages one at a time, so at most K at once).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

import polybus
from polybus.config import redact


async def measure(
    url: str, ordering: str, messages: int, keys: int, work: float, window: int
) -> float:
    run = uuid.uuid4().hex[:8]
    topic, group = f"polybus-bench-order-{run}", f"bench-{ordering}-{run}"
    done = 0
    finished = asyncio.Event()
    async with polybus.connect(url) as bus:
        worker = polybus.Worker(bus, handle_signals=False)

        @worker.handler(topic, group=group, max_in_flight=window, ordering=ordering)
        async def handle(msg: polybus.Message) -> None:
            nonlocal done
            await asyncio.sleep(work)
            done += 1
            if done >= messages:
                finished.set()

        await bus.declare(topic, group, ordering=ordering)
        batch = [polybus.Outgoing(b"x" * 64, key=f"k{i % keys}") for i in range(messages)]
        for start in range(0, messages, 500):
            await bus.publish_many(topic, batch[start : start + 500])
        running = asyncio.create_task(worker.run())
        await worker.wait_ready()
        started = time.perf_counter()
        await asyncio.wait(
            {running, asyncio.ensure_future(finished.wait())},
            timeout=600,
            return_when=asyncio.FIRST_COMPLETED,
        )
        elapsed = time.perf_counter() - started
        await worker.stop()
        await running
    if done < messages:
        raise RuntimeError(f"ordering={ordering}: {done} of {messages} handled")
    return messages / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m polybus.bench.ordering", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--handler-ms", type=float, default=1.0)
    parser.add_argument("--max-in-flight", type=int, default=64)
    args = parser.parse_args(argv)
    work = args.handler_ms / 1000
    print(
        f"{redact(args.url)}: {args.messages} messages over {args.keys} keys, handler "
        f"{args.handler_ms:g} ms, max_in_flight {args.max_in_flight}"
    )
    for ordering in ("none", "key"):
        rate = asyncio.run(
            measure(args.url, ordering, args.messages, args.keys, work, args.max_in_flight)
        )
        print(f"  ordering={ordering:<5} {rate:>10,.0f} msg/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

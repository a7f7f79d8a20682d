"""What per-key order costs a Worker: the same handler in an unordered and a key-ordered
group, one after the other on one broker.

``python -m polybus.bench.ordering URL [--messages N] [--keys K] [--handler-ms MS]
[--max-in-flight M]`` publishes N messages over K keys (round-robin) to a fresh topic per
mode, runs a Worker whose handler awaits MS milliseconds, and prints messages per second
for ``ordering="none"`` (up to M handlers at once, whatever the key) and
``ordering="key"`` (a key's messages one at a time, so at most K at once).
``polybus bench BACKEND --handler-ms MS`` runs the same comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Callable

import polybus
from polybus.config import redact
from polybus.errors import ConfigError


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


async def compare_orderings(
    url: str,
    *,
    messages: int = 5000,
    keys: int = 4,
    handler_ms: float = 1.0,
    max_in_flight: int = 64,
    progress: Callable[[str], None] = lambda step: None,
) -> dict[str, float | str]:
    """Messages per second for ``ordering="none"`` and ``ordering="key"``, measured one
    after the other on ``url``; a mode the backend refuses maps to the refusal's text."""
    results: dict[str, float | str] = {}
    for ordering in ("none", "key"):
        progress(f"ordering={ordering}: {messages} messages, handler {handler_ms:g} ms")
        try:
            results[ordering] = await measure(
                url, ordering, messages, keys, handler_ms / 1000, max_in_flight
            )
        except ConfigError as exc:
            results[ordering] = f"refused: {exc}"
    return results


def report(
    url: str,
    keys: int,
    messages: int,
    handler_ms: float,
    window: int,
    results: dict[str, float | str],
) -> str:
    """The comparison as text, one line per mode."""
    lines = [
        f"{redact(url)}: {messages} messages over {keys} keys, handler {handler_ms:g} ms, "
        f"max_in_flight {window}"
    ]
    for ordering, rate in results.items():
        shown = f"{rate:>10,.0f} msg/s" if isinstance(rate, float) else rate
        lines.append(f"  ordering={ordering:<5} {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m polybus.bench.ordering", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--handler-ms", type=float, default=1.0)
    parser.add_argument("--max-in-flight", type=int, default=64)
    args = parser.parse_args(argv)
    results = asyncio.run(
        compare_orderings(
            args.url,
            messages=args.messages,
            keys=args.keys,
            handler_ms=args.handler_ms,
            max_in_flight=args.max_in_flight,
        )
    )
    print(report(args.url, args.keys, args.messages, args.handler_ms, args.max_in_flight, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

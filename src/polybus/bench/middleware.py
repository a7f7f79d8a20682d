"""Per-message cost of the reliability middleware: ``python -m polybus.bench.middleware``.

Runs a no-op handler over pre-built messages, bare and wrapped in
:func:`polybus.defaults` with each store, and reports the median extra cost per
message over several rounds (the broker is left out: this is the chain's own cost).
Every message has a fresh id, so idempotency does its full work (claim, then mark
done) each time. Aim: at most 10 µs per message for the default chain with the
MemoryStore. The SQLite figure includes a thread hop and a commit per store call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from .._message import Message
from .._worker import Handler, Middleware, chain
from ..middleware import defaults
from ..stores import MemoryStore, SQLiteStore

AIM_MEMORY_US = 10.0


async def _noop(msg: Message) -> None:
    return None


def _messages(count: int) -> list[Message]:
    return [
        Message(id=uuid.uuid4().hex, topic="bench", body=b"x" * 64, group="g") for _ in range(count)
    ]


async def _time(handler: Handler, messages: Sequence[Message]) -> float:
    start = time.perf_counter()
    for msg in messages:
        await handler(msg)
    return time.perf_counter() - start


async def measure(make_chain: Callable[[], Sequence[Middleware]], count: int, rounds: int) -> float:
    """Median extra microseconds per message of the chain over the bare handler."""
    extra: list[float] = []
    for _ in range(rounds):
        messages = _messages(count)
        bare = await _time(_noop, messages)
        wrapped = chain(_noop, make_chain())
        cost = await _time(wrapped, _messages(count))
        extra.append((cost - bare) / count * 1e6)
    return statistics.median(extra)


async def run(count: int, sqlite_count: int, rounds: int) -> dict[str, float]:
    results: dict[str, float] = {}
    results["defaults(no store)"] = await measure(defaults, count, rounds)
    results["defaults(MemoryStore)"] = await measure(
        lambda: defaults(idempotency=MemoryStore()), count, rounds
    )
    with tempfile.TemporaryDirectory() as tmp:
        stores: list[SQLiteStore] = []

        def with_sqlite() -> Sequence[Middleware]:
            store = SQLiteStore(Path(tmp) / f"bench-{len(stores)}.db")
            stores.append(store)
            return defaults(idempotency=store)

        results["defaults(SQLiteStore)"] = await measure(with_sqlite, sqlite_count, rounds)
        for store in stores:
            await store.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m polybus.bench.middleware")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--sqlite-messages", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.messages, args.sqlite_messages, args.rounds))
    if args.json:
        print(json.dumps({"extra_us_per_message": results, "aim_memory_us": AIM_MEMORY_US}))
    else:
        print(f"middleware cost per message (median of {args.rounds} rounds, no broker)")
        for name, micros in results.items():
            print(f"  {name:<24} {micros:9.2f} us")
        verdict = "met" if results["defaults(MemoryStore)"] <= AIM_MEMORY_US else "NOT met"
        print(f"  aim: defaults(MemoryStore) <= {AIM_MEMORY_US:.0f} us: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

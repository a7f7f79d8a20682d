"""The raw baseline for ``polybus bench memory``.

memory:// has no native client, so the "raw" side is the in-process equivalent with
no SDK layers: an :class:`asyncio.Queue` per group. Publishing appends (there is no
broker to confirm), consuming takes an item and marks it done. It is the ceiling an
in-process bus could reach in this interpreter; the SDK/raw ratio is what the message
model, encoding, backpressure and settlement bookkeeping cost.
"""

from __future__ import annotations

import asyncio

from polybus.bench import RawBaseline


class QueueBaseline:
    """:class:`polybus.bench.RawBaseline` over one :class:`asyncio.Queue`."""

    description = "asyncio.Queue in the same process (no SDK layers, no broker)"

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes] | None = None

    async def setup(self, url: str, topic: str, group: str) -> None:
        self._queue = asyncio.Queue()

    async def publish(self, bodies: list[bytes]) -> None:
        queue = self._opened()
        for body in bodies:
            queue.put_nowait(body)

    async def consume(self, count: int) -> None:
        queue = self._opened()
        for _ in range(count):
            await queue.get()
            queue.task_done()  # the "ack"

    async def round_trip(self, body: bytes) -> None:
        queue = self._opened()
        queue.put_nowait(body)
        await queue.get()
        queue.task_done()

    async def teardown(self) -> None:
        self._queue = None

    def _opened(self) -> asyncio.Queue[bytes]:
        if self._queue is None:
            raise RuntimeError("QueueBaseline used before setup()")
        return self._queue


def raw_baseline() -> RawBaseline:
    return QueueBaseline()

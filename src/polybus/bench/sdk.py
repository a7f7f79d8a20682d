"""The SDK side of a benchmark: the :class:`~polybus.bench.RawBaseline` work done
through polybus (``Bus.publish`` / ``Bus.publish_many`` and a consumer), no middleware.

Three ways to consume, chosen with ``consume_api``: ``worker`` (the default) runs a
:class:`~polybus.Worker` whose handler takes each message (the Worker acks it), as
applications consume, timed from its first settlement to its last. The Worker runs
for the whole benchmark (a restart per round would time group joins and rebalances);
outside the consume and latency phases its handlers wait at a gate, so it holds at
most ``max_in_flight`` messages while the publish phases run, as the raw consumers'
prefetch does; ``each`` takes messages one by one
(``Subscription.get``) and acks each (``Message.ack``); ``batch`` takes what is ready
(``Subscription.get_many``) and acks it with one ``Subscription.ack_many``, as the raw
clients' batch consume loops do."""

from __future__ import annotations

import asyncio
import time

import polybus

from ..errors import PolybusError

IDLE_TIMEOUT = 30.0
"""Seconds without a message after which a consume phase fails instead of hanging."""


CONSUME_APIS = ("worker", "each", "batch")

_DESCRIPTIONS = {
    "worker": "Bus.publish / publish_many; a Worker (handler per message, acked by the "
    "Worker); no middleware",
    "each": "Bus.publish / publish_many; Subscription.get + Message.ack per message; no middleware",
    "batch": "Bus.publish / publish_many; Subscription.get_many + ack_many; no middleware",
}


class SdkSide:
    """Implements :class:`~polybus.bench.RawBaseline` with the polybus API."""

    def __init__(self, max_in_flight: int = 256, consume_api: str = "worker") -> None:
        if consume_api not in CONSUME_APIS:
            raise ValueError(f"consume_api must be one of {CONSUME_APIS}, got {consume_api!r}")
        self.max_in_flight = max_in_flight
        self.consume_api = consume_api
        self.description = _DESCRIPTIONS[consume_api]
        self._bus: polybus.Bus | None = None
        self._sub: polybus.Subscription | None = None
        self._topic = ""
        self._group = ""
        self._worker: _BenchWorker | None = None

    async def setup(self, url: str, topic: str, group: str) -> None:
        self._bus = await polybus.connect(url)
        self._topic, self._group = topic, group
        if self.consume_api == "worker":
            # the group exists before the first publish; the Worker runs per consume phase
            await self._bus.declare(topic, group)
            return
        # entering the subscription creates the group, so every publish reaches it
        sub = self._bus.subscribe(topic, group=group, max_in_flight=self.max_in_flight)
        self._sub = await sub.open()

    async def publish(self, bodies: list[bytes]) -> None:
        bus = self._opened_bus()
        if len(bodies) == 1:
            await bus.publish(self._topic, bodies[0])
        else:
            await bus.publish_many(self._topic, bodies)

    async def publish_concurrent(self, bodies: list[bytes]) -> None:
        bus, topic = self._opened_bus(), self._topic
        await asyncio.gather(*(bus.publish(topic, body) for body in bodies))

    async def consume(self, count: int) -> float | None:
        if self.consume_api == "worker":
            worker = self._worker or await self._start_worker()
            worker.gate.set()
            return await worker.settled(count)
        sub = self._opened_sub()
        if self.consume_api == "batch":
            left = count
            while left > 0:
                batch = await sub.get_many(left, timeout=IDLE_TIMEOUT)
                await sub.ack_many(batch)
                left -= len(batch)
            return None
        for _ in range(count):
            msg = await sub.get(timeout=IDLE_TIMEOUT)
            await msg.ack()
        return None

    async def round_trip(self, body: bytes) -> None:
        await self._opened_bus().publish(self._topic, body)
        if self.consume_api == "worker":
            worker = self._worker or await self._start_worker()
            worker.gate.set()
            await worker.settled(1)
            return
        msg = await self._opened_sub().get(timeout=IDLE_TIMEOUT)
        await msg.ack()

    async def end_round(self) -> None:
        """Close the Worker's gate: the next round's publish phases run while its
        handlers wait."""
        if self._worker is not None:
            self._worker.gate.clear()

    async def teardown(self) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            worker.gate.set()
            await worker.stop()
        if self._sub is not None:
            await self._sub.close()
        if self._bus is not None:
            await self._bus.close()

    async def _start_worker(self) -> _BenchWorker:
        self._worker = _BenchWorker(self._opened_bus(), self._topic, self._group)
        await self._worker.start(self.max_in_flight)
        return self._worker

    def _opened_bus(self) -> polybus.Bus:
        if self._bus is None:
            raise PolybusError("benchmark side used before setup()")
        return self._bus

    def _opened_sub(self) -> polybus.Subscription:
        if self._sub is None:
            raise PolybusError("benchmark side used before setup()")
        return self._sub


class _BenchWorker:
    """A Worker with a handler that takes each message once ``gate`` is open, counting
    what it acked."""

    def __init__(self, bus: polybus.Bus, topic: str, group: str) -> None:
        self.worker = polybus.Worker(bus, handle_signals=False)
        self.topic, self.group = topic, group
        self.times: list[float] = []
        """When each ack happened, in order."""
        self.expected = 0
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.gate = asyncio.Event()

    async def start(self, max_in_flight: int) -> None:
        gate = self.gate

        @self.worker.handler(self.topic, group=self.group, max_in_flight=max_in_flight)
        async def take(msg: polybus.Message) -> None:
            if not gate.is_set():
                await gate.wait()
            msg.body  # noqa: B018 - received, as the raw side reads each value

        self.worker._observers.append(self._observe)
        self._task = asyncio.create_task(self.worker.run())
        ready = asyncio.ensure_future(self.worker.wait_ready())
        done, _ = await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            await self._task  # raises why the worker ended
            raise PolybusError("the benchmark's Worker ended before it was ready")

    def _observe(self, _route: str, _msg: polybus.Message, settlement: str) -> None:
        if settlement == "ack":
            self.times.append(time.perf_counter())
            self._progress.set()

    async def settled(self, count: int) -> float:
        """Wait until ``count`` more messages are acked (counting from the end of the
        previous call, acks made before this call included); the seconds from the first
        of them to the last."""
        base = self.expected
        self.expected += count
        times = self.times
        while len(times) < self.expected:
            self._progress.clear()
            if self._task is not None and self._task.done():
                await self._task
                raise PolybusError("the benchmark's Worker ended")
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    await self._progress.wait()
            except TimeoutError:
                raise TimeoutError(
                    f"worker: {len(times) - base} of {count} acked, none for {IDLE_TIMEOUT} s"
                ) from None
        return max(times[self.expected - 1] - times[base], 1e-9)

    async def stop(self) -> None:
        await self.worker.stop()
        if self._task is not None:
            await self._task

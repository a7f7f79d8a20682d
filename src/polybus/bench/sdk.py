"""The SDK side of a benchmark: the :class:`~polybus.bench.RawBaseline` work done
through polybus (``Bus.publish_many`` and a ``Subscription``), with no middleware.

Two ways to consume, chosen with ``consume_api``: ``each`` takes messages one by one
(``Subscription.get``) and acks each (``Message.ack``), as most handlers do; ``batch``
takes what is ready (``Subscription.get_many``) and acks it with one
``Subscription.ack_many``, as the raw clients' batch consume loops do."""

from __future__ import annotations

import polybus

from ..errors import PolybusError

IDLE_TIMEOUT = 30.0
"""Seconds without a message after which a consume phase fails instead of hanging."""


CONSUME_APIS = ("each", "batch")


class SdkSide:
    """Implements :class:`~polybus.bench.RawBaseline` with the polybus API."""

    def __init__(self, max_in_flight: int = 256, consume_api: str = "each") -> None:
        if consume_api not in CONSUME_APIS:
            raise ValueError(f"consume_api must be one of {CONSUME_APIS}, got {consume_api!r}")
        self.max_in_flight = max_in_flight
        self.consume_api = consume_api
        self.description = (
            "Bus.publish_many; Subscription.get + Message.ack per message; no middleware"
            if consume_api == "each"
            else "Bus.publish_many; Subscription.get_many + ack_many; no middleware"
        )
        self._bus: polybus.Bus | None = None
        self._sub: polybus.Subscription | None = None
        self._topic = ""

    async def setup(self, url: str, topic: str, group: str) -> None:
        self._bus = await polybus.connect(url)
        self._topic = topic
        # entering the subscription creates the group, so every publish reaches it
        sub = self._bus.subscribe(topic, group=group, max_in_flight=self.max_in_flight)
        self._sub = await sub.open()

    async def publish(self, bodies: list[bytes]) -> None:
        await self._opened_bus().publish_many(self._topic, bodies)

    async def consume(self, count: int) -> None:
        sub = self._opened_sub()
        if self.consume_api == "batch":
            left = count
            while left > 0:
                batch = await sub.get_many(left, timeout=IDLE_TIMEOUT)
                await sub.ack_many(batch)
                left -= len(batch)
            return
        for _ in range(count):
            msg = await sub.get(timeout=IDLE_TIMEOUT)
            await msg.ack()

    async def round_trip(self, body: bytes) -> None:
        await self._opened_bus().publish(self._topic, body)
        msg = await self._opened_sub().get(timeout=IDLE_TIMEOUT)
        await msg.ack()

    async def teardown(self) -> None:
        if self._sub is not None:
            await self._sub.close()
        if self._bus is not None:
            await self._bus.close()

    def _opened_bus(self) -> polybus.Bus:
        if self._bus is None:
            raise PolybusError("benchmark side used before setup()")
        return self._bus

    def _opened_sub(self) -> polybus.Subscription:
        if self._sub is None:
            raise PolybusError("benchmark side used before setup()")
        return self._sub

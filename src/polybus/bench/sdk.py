"""The SDK side of a benchmark: the :class:`~polybus.bench.RawBaseline` work done
through polybus (``Bus.publish_many``, a ``Subscription``, one ``ack`` per message),
with no middleware."""

from __future__ import annotations

import polybus

from ..errors import PolybusError

IDLE_TIMEOUT = 30.0
"""Seconds without a message after which a consume phase fails instead of hanging."""


class SdkSide:
    """Implements :class:`~polybus.bench.RawBaseline` with the polybus API."""

    description = "polybus Bus.publish_many / Subscription + Message.ack, no middleware"

    def __init__(self, max_in_flight: int = 256) -> None:
        self.max_in_flight = max_in_flight
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
